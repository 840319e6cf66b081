package replay

import (
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/leadport/leadport-agent/detect/policy"
)

// EvalOptions size an evaluation.
type EvalOptions struct {
	// Days of each Human and Honest model; Sessions of each Machine
	// model; Scenarios of each Forwarding and Trunking model.
	Days, Sessions, Scenarios int
	Seed                      uint64
	Workers                   int // default GOMAXPROCS
	Line                      string
}

// Targets are what the evaluation must show (issues 4 and 15).
const (
	// Machines that do not hide their pacing: blocked by then.
	TargetMedianAttempts = 3
	TargetWorstAttempts  = 10
	// Machines that hide it: every session detected (a suspect report or
	// a block) within TargetHidingDetect attempts, the first report at a
	// median of TargetHidingSuspect, the block at a median of
	// TargetHidingBlock.
	TargetHidingDetect  = 200
	TargetHidingSuspect = 10
	TargetHidingBlock   = 40
	// People: agent-days with a suspect report, at most this share (in
	// hundredths of a percent: 100 is 1 %).
	TargetSuspectDaysBP = 100
)

// never stands for "not within the session" in attempt counts.
const never = 1 << 30

// ModelReport is one model's figures.
type ModelReport struct {
	Model  string
	Class  Class
	Rule   string
	Hides  bool
	Traces int
	// People: traces (agent-days) with any block, which are all false,
	// and the rules that made them.
	FalseBlocked int
	FalseBy      map[string]int
	Attempts     int // outbound attempts replayed
	// Machines and scenarios: traces where the expected rule tripped, and
	// for machines the outbound attempts until it did.
	Detected    int
	ToDetect    []int
	FirstBlocks map[string]int // first blocking rule per trace ("" none)
	Signals     map[string]int // pacing signal that caught a machine
	// Suspect reports: people's agent-days with one (all false) and the
	// signals; for machines the attempt of the first report and of the
	// first pacing block per session (never when none), and the first
	// detection, whichever came first.
	SuspectDays    int
	SuspectBy      map[string]int
	ToSuspect      []int
	ToBlock        []int
	ToFirst        []int
	SuspectSignals map[string]int
}

// Median, P95 and Worst of the attempts until detection.
func (m *ModelReport) Median() int { return pct(m.ToDetect, 50) }
func (m *ModelReport) P95() int    { return pct(m.ToDetect, 95) }
func (m *ModelReport) Worst() int  { return pct(m.ToDetect, 100) }

// SuspectShareBP is the share of agent-days with a suspect report, in
// hundredths of a percent.
func (m *ModelReport) SuspectShareBP() int { return 10000 * m.SuspectDays / max(m.Traces, 1) }

func pct(xs []int, p int) int {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100
	return s[max(i-1, 0)]
}

// Pass reports whether the model meets its target.
func (m *ModelReport) Pass() bool {
	switch m.Class {
	case Human, Honest:
		return m.FalseBlocked == 0 && 10000*m.SuspectDays <= TargetSuspectDaysBP*m.Traces
	case Machine:
		if m.Hides {
			return pct(m.ToFirst, 100) <= TargetHidingDetect && pct(m.ToFirst, 50) <= TargetHidingSuspect &&
				pct(m.ToBlock, 50) <= TargetHidingBlock
		}
		return m.Detected == m.Traces && m.Median() <= TargetMedianAttempts && m.Worst() <= TargetWorstAttempts
	}
	return m.Detected == m.Traces
}

// Report is a whole evaluation.
type Report struct {
	Models []*ModelReport
}

// Pass reports whether every model meets its target.
func (r *Report) Pass() bool {
	for _, m := range r.Models {
		if !m.Pass() {
			return false
		}
	}
	return true
}

// Evaluate replays traces of every model under the policy. Traces are
// generated from the seed, the model's index and the trace's index, so a
// run is reproducible whatever the number of workers.
func Evaluate(models []Model, pol policy.Policy, o EvalOptions) (*Report, error) {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Line == "" {
		o.Line = "+15551230001"
	}
	rep := &Report{}
	for mi, m := range models {
		n := o.Scenarios
		switch m.Class {
		case Human, Honest:
			n = o.Days
		case Machine:
			n = o.Sessions
		}
		mr := &ModelReport{Model: m.Name, Class: m.Class, Rule: m.Rule, Hides: m.Hides, Traces: n, FalseBy: map[string]int{},
			FirstBlocks: map[string]int{}, Signals: map[string]int{}, SuspectBy: map[string]int{}, SuspectSignals: map[string]int{}}
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		next := make(chan int)
		for w := 0; w < o.Workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					r := rand.New(rand.NewPCG(o.Seed, uint64(mi)<<32|uint64(i)))
					tr := m.Generate(r, o.Line)
					res, err := Run(&tr, pol, Options{StopAtFirstBlock: true})
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = fmt.Errorf("%s trace %d: %w", m.Name, i, err)
					}
					if err == nil {
						mr.add(&tr, res)
					}
					mu.Unlock()
				}
			}()
		}
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		if firstErr != nil {
			return nil, firstErr
		}
		rep.Models = append(rep.Models, mr)
	}
	return rep, nil
}

func (m *ModelReport) add(tr *Trace, res *Result) {
	m.Attempts += res.Attempts
	first := ""
	if b, ok := res.First(); ok {
		first = b.Rule
	}
	m.FirstBlocks[first]++
	suspectAt, suspectSig := never, ""
	for i, t := range res.Trips {
		if t.Action == TripSuspect {
			suspectAt = t.Attempt
			suspectSig, _ = res.Violations[i].Evidence["signal"].(string)
			break
		}
	}
	switch m.Class {
	case Human, Honest:
		if first != "" {
			m.FalseBlocked++
			m.FalseBy[withSignal(first, res)]++
		}
		if suspectAt != never {
			m.SuspectDays++
			m.SuspectBy[suspectSig]++
		}
		return
	case Machine:
		blockAt := never
		for _, t := range res.Trips {
			if t.Action != TripSuspect && ruleMatches(t.Rule, m.Rule) {
				blockAt = t.Attempt
				break
			}
		}
		if suspectAt != never {
			m.SuspectSignals[suspectSig]++
		}
		m.ToSuspect = append(m.ToSuspect, suspectAt)
		m.ToBlock = append(m.ToBlock, blockAt)
		m.ToFirst = append(m.ToFirst, min(suspectAt, blockAt))
	}
	if m.Class != Machine {
		// A scenario is caught when anything blocked it; which rule did
		// is in FirstBlocks (an attended transfer's consultation call is
		// refused as a second dialog before its REFER is sent).
		if first != "" {
			m.Detected++
		}
		return
	}
	for i, t := range res.Trips {
		if t.Action != TripSuspect && ruleMatches(t.Rule, m.Rule) {
			m.Detected++
			if sig, ok := res.Violations[i].Evidence["signal"].(string); ok {
				m.Signals[sig]++
			}
			if m.Class == Machine {
				m.ToDetect = append(m.ToDetect, t.Attempt)
			}
			return
		}
	}
}

// withSignal names the pacing signal that tripped, for reports.
func withSignal(rule string, res *Result) string {
	for _, v := range res.Violations {
		if v.Rule == rule {
			if sig, ok := v.Evidence["signal"].(string); ok {
				return rule + "/" + sig
			}
			break
		}
	}
	return rule
}

// ruleMatches: a model may expect a family ("forwarding") or a rule.
func ruleMatches(got, want string) bool {
	return got == want || strings.HasPrefix(got, want+".")
}

// Print writes the report as tables: people, machines, scenarios, and a
// confusion matrix of each class against the first rule that blocked.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "People and honest use (target: no agent-day with a block; a suspect report on at most %.0f %% of days)\n", float64(TargetSuspectDaysBP)/100)
	fmt.Fprintf(w, "  %-26s %8s %10s %12s %10s %8s %8s  %s\n", "model", "days", "attempts", "false-block", "share", "suspect", "share", "by rule; suspect by signal")
	for _, m := range r.Models {
		if m.Class != Human && m.Class != Honest {
			continue
		}
		fmt.Fprintf(w, "  %-26s %8d %10d %12d %9.4f%% %8d %7.2f%%  %s; %s %s\n", m.Model, m.Traces, m.Attempts, m.FalseBlocked,
			100*float64(m.FalseBlocked)/float64(max(m.Traces, 1)), m.SuspectDays, float64(m.SuspectShareBP())/100,
			counts(m.FalseBy), counts(m.SuspectBy), passMark(m))
	}
	fmt.Fprintf(w, "\nMachines: blocks by pacing (target, not hiding: all blocked, median <= %d attempts, worst <= %d)\n", TargetMedianAttempts, TargetWorstAttempts)
	fmt.Fprintf(w, "  suspect reports, first detection (suspect or block) and blocks, in attempts: median/p95/worst (- never)\n")
	fmt.Fprintf(w, "  (target, hiding: first detection worst <= %d, median <= %d; block median <= %d)\n", TargetHidingDetect, TargetHidingSuspect, TargetHidingBlock)
	fmt.Fprintf(w, "  %-26s %6s %8s %8s %13s %13s %13s  %-6s %s\n", "model", "hides", "sessions", "blocked", "suspect", "detect", "block", "", "block signals; suspect signals")
	for _, m := range r.Models {
		if m.Class != Machine {
			continue
		}
		fmt.Fprintf(w, "  %-26s %6v %8d %8d %13s %13s %13s  %-6s %s; %s\n", m.Model, m.Hides, m.Traces, m.Detected,
			triple(m.ToSuspect), triple(m.ToFirst), triple(m.ToBlock), passMark(m), counts(m.Signals), counts(m.SuspectSignals))
	}
	fmt.Fprintf(w, "\nForwarding and trunking scenarios (target: all blocked)\n")
	fmt.Fprintf(w, "  %-26s %-24s %9s %8s  %s\n", "model", "expected rule", "scenarios", "blocked", "first blocked by")
	for _, m := range r.Models {
		if m.Class != Forwarding && m.Class != Trunking {
			continue
		}
		fmt.Fprintf(w, "  %-26s %-24s %9d %8d  %-6s %s\n", m.Model, m.Rule, m.Traces, m.Detected, passMark(m), counts(m.FirstBlocks))
	}
	r.printConfusion(w)
}

// triple is the median, p95 and worst of attempt counts, "-" for never.
func triple(xs []int) string {
	f := func(v int) string {
		if v >= never {
			return "-"
		}
		return fmt.Sprint(v)
	}
	return f(pct(xs, 50)) + "/" + f(pct(xs, 95)) + "/" + f(pct(xs, 100))
}

func passMark(m *ModelReport) string {
	if m.Pass() {
		return "ok"
	}
	return "MISSED"
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// printConfusion: rows are the classes (what the trace is), columns the
// rule family that blocked first (what the agent said), in traces.
func (r *Report) printConfusion(w io.Writer) {
	cols := []string{"none", "forwarding", "trunking", "pacing", "callerid", "quota"}
	family := func(rule string) string {
		if rule == "" {
			return "none"
		}
		f, _, _ := strings.Cut(rule, ".")
		return f
	}
	rows := map[Class]map[string]int{}
	classes := []Class{Human, Honest, Machine, Forwarding, Trunking}
	for _, m := range r.Models {
		if rows[m.Class] == nil {
			rows[m.Class] = map[string]int{}
		}
		for rule, n := range m.FirstBlocks {
			rows[m.Class][family(rule)] += n
		}
	}
	fmt.Fprintf(w, "\nConfusion matrix: traces by class (rows) and the rule family that blocked first (columns)\n")
	fmt.Fprintf(w, "  %-12s", "")
	for _, c := range cols {
		fmt.Fprintf(w, " %11s", c)
	}
	fmt.Fprintln(w)
	for _, cl := range classes {
		if rows[cl] == nil {
			continue
		}
		fmt.Fprintf(w, "  %-12s", cl)
		for _, c := range cols {
			fmt.Fprintf(w, " %11d", rows[cl][c])
		}
		fmt.Fprintln(w)
	}
}
