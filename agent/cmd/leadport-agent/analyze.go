package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/capture"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/replay"
	"github.com/leadport/leadport-agent/store/phone"
)

// analyzeCmd replays captures (pcap, pcapng) and trace files (JSON lines)
// through the rules the proxy runs, in simulated time, and prints what
// they made of each call and line (docs/analyze.md). The captures given
// are one stream, in time order (a capture rotated over several files is
// read whole); each trace file is replayed on its own, since its times
// start at 0.
func analyzeCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	polFile := fs.String("policy", "", "policy document (JSON, as the platform sends it; default: the policy the agent ships)")
	linesFlag := fs.String("lines", "", "the device's lines, E.164, comma-separated (default: the policy's; a trace's own; inferred from a capture)")
	asJSON := fs.Bool("json", false, "print one JSON document")
	unmasked := fs.Bool("unmasked", false, "print phone numbers whole (they are personal data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errUsage
	}
	pol := policy.Default()
	polName := "the shipped defaults"
	if *polFile != "" {
		b, err := os.ReadFile(*polFile)
		if err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		if pol, err = policy.Parse(b); err != nil {
			return fmt.Errorf("policy %s: %w", *polFile, err)
		}
		polName = *polFile
	}
	lines, err := parseLines(*linesFlag)
	if err != nil {
		return err
	}
	if len(lines) > 0 {
		pol.Lines = lines
	}
	runs, err := analyzeFiles(fs.Args(), pol)
	if err != nil {
		return err
	}
	mask := phone.Mask
	if *unmasked {
		mask = func(s string) string { return s }
	}
	w := bufio.NewWriterSize(stdout, 64<<10)
	if *asJSON {
		if err := writeAnalysisJSON(w, runs, mask); err != nil {
			return err
		}
	} else {
		printAnalysis(w, runs, polName, mask)
	}
	return w.Flush()
}

func parseLines(s string) ([]string, error) {
	var out []string
	for _, l := range strings.Split(s, ",") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		n, err := phone.Normalize(l, "")
		if err != nil || n != l {
			return nil, fmt.Errorf("--lines: %s is not an E.164 number (+ and digits)", phone.Mask(l))
		}
		out = append(out, n)
	}
	return out, nil
}

// analyzeRun is one replay: the captures together, or one trace file.
type analyzeRun struct {
	source    string // the file, or the captures' files
	kind      string // "capture" or "trace"
	linesFrom string // where the lines came from, for the report
	a         *replay.Analysis
	files     []string // the captures' files, with their stats
	stats     []capture.Stats
	took      time.Duration
}

func analyzeFiles(files []string, pol policy.Policy) ([]analyzeRun, error) {
	var runs []analyzeRun
	var msgs []capture.Message
	var capFiles []string
	var capStats []capture.Stats
	for _, name := range files {
		f, err := openInput(name)
		if err != nil {
			return nil, err
		}
		br := bufio.NewReaderSize(f, 64<<10)
		head, _ := br.Peek(4)
		if capture.Sniff(head) != capture.Unknown {
			m, st, err := capture.Read(br, capture.Options{})
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			msgs = append(msgs, m...)
			capFiles = append(capFiles, name)
			capStats = append(capStats, st)
			continue
		}
		tr, err := replay.ReadTraceFile(br)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		start := time.Now()
		a, err := replay.AnalyzeTrace(tr, pol, replay.Options{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		from := "the trace's"
		if len(pol.Lines) > 0 {
			from = "given"
		}
		runs = append(runs, analyzeRun{source: name, kind: "trace", linesFrom: from, a: a, took: time.Since(start)})
	}
	if len(capFiles) > 0 {
		// Files of one rotated capture come in any order; the replay
		// wants one stream in time order.
		slices.SortStableFunc(msgs, func(x, y capture.Message) int { return x.At.Compare(y.At) })
		start := time.Now()
		a, err := replay.AnalyzeMessages(msgs, pol, replay.CaptureOptions{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(capFiles, ", "), err)
		}
		from := "given"
		if a.InferredLines {
			from = "inferred from the capture"
		}
		runs = append(runs, analyzeRun{source: strings.Join(capFiles, ","), kind: "capture", linesFrom: from, a: a, files: capFiles, stats: capStats, took: time.Since(start)})
	}
	return runs, nil
}

func openInput(name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err // it names the file
	}
	return f, nil
}

// The JSON document: one object with the lines and the calls of every
// input. Numbers are masked unless --unmasked.
type analyzeJSON struct {
	Lines []lineJSON `json:"lines"`
	Calls []callJSON `json:"calls"`
}

type lineJSON struct {
	Line string `json:"line"`
	// Source is the input the line was replayed from; Inferred is set
	// when a capture's lines were guessed (InferLines).
	Source       string     `json:"source"`
	Inferred     bool       `json:"inferred,omitempty"`
	Attempts     int        `json:"attempts"`
	FirstSuspect *int       `json:"first_suspect"`
	FirstBlock   *int       `json:"first_block"`
	Rules        []ruleJSON `json:"rules"`
}

type ruleJSON struct {
	Rule         string         `json:"rule"`
	Action       string         `json:"action"`
	Count        int            `json:"count"`
	FirstAttempt *int           `json:"first_attempt"`
	Evidence     map[string]any `json:"evidence,omitempty"`
}

// callJSON uses the trace file's field names where they apply, so that
// a capture's calls read like a trace.
type callJSON struct {
	Source    string   `json:"source"`
	N         int      `json:"n"`
	Start     float64  `json:"start"`
	Direction string   `json:"direction"`
	Line      string   `json:"line,omitempty"`
	Remote    string   `json:"remote"`
	From      string   `json:"from,omitempty"`
	PAI       string   `json:"pai,omitempty"`
	Diversion []string `json:"diversion,omitempty"`
	Ring      float64  `json:"ring_s"`
	Status    int      `json:"status"`
	Talk      float64  `json:"talk_s,omitempty"`
	Bye       string   `json:"bye,omitempty"`
	// Attempt is the call's number among its line's outbound attempts
	// (absent for other calls).
	Attempt int `json:"attempt,omitempty"`
	// Verdict: allowed, or blocked (then Rule and BlockStatus say by what).
	Verdict     string   `json:"verdict"`
	Rule        string   `json:"rule,omitempty"`
	BlockStatus int      `json:"block_status,omitempty"`
	Observed    []string `json:"observed,omitempty"`
	Suspect     []string `json:"suspect,omitempty"`
}

func intp(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

func lineReports(runs []analyzeRun, mask func(string) string) []lineJSON {
	out := []lineJSON{}
	for _, r := range runs {
		for _, l := range r.a.LineReports() {
			lj := lineJSON{Line: mask(l.Line), Source: r.source, Inferred: r.a.InferredLines, Attempts: l.Attempts,
				FirstSuspect: intp(l.FirstSuspect), FirstBlock: intp(l.FirstBlock), Rules: []ruleJSON{}}
			for _, rr := range l.Rules {
				lj.Rules = append(lj.Rules, ruleJSON{Rule: rr.Rule, Action: rr.Action, Count: rr.Count, FirstAttempt: intp(rr.FirstAttempt), Evidence: rr.Evidence})
			}
			out = append(out, lj)
		}
	}
	return out
}

// eachCall hands over the calls of every run in the JSON form, one at a
// time: a trace of many agent-days has hundreds of thousands.
func eachCall(runs []analyzeRun, mask func(string) string, fn func(*callJSON) error) error {
	for _, r := range runs {
		verdicts := callVerdicts(r.a)
		att := r.a.LineAttempts()
		for i, c := range r.a.Calls {
			cj := callJSON{Source: r.source, N: i + 1, Start: c.Start.Seconds(), Direction: dirName(c.Direction), Line: mask(c.Line),
				Remote: mask(c.Remote), From: mask(c.From), PAI: mask(c.PAI), Ring: c.Ring.Seconds(), Status: c.Status,
				Talk: c.Talk.Seconds(), Bye: string(c.Bye), Attempt: att[i], Verdict: "allowed"}
			for _, d := range c.Diversion {
				cj.Diversion = append(cj.Diversion, mask(d))
			}
			v := verdicts[i]
			if v.rule != "" {
				cj.Verdict, cj.Rule, cj.BlockStatus = "blocked", v.rule, v.status
			}
			cj.Observed, cj.Suspect = v.observed, v.suspect
			if err := fn(&cj); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeAnalysisJSON writes the one document, the lines indented and each
// call on a line of its own, so that a large one can be read with grep
// as well as with jq.
func writeAnalysisJSON(w io.Writer, runs []analyzeRun, mask func(string) string) error {
	lines, err := json.MarshalIndent(lineReports(runs, mask), "", "  ")
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "{\"lines\": %s,\n\"calls\": [", lines); err != nil {
		return err
	}
	sep := "\n"
	err = eachCall(runs, mask, func(c *callJSON) error {
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		sep = ",\n"
		_, err = w.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n]}\n")
	return err
}

func dirName(d detect.Direction) string {
	if d == detect.Outbound || d == detect.Inbound {
		return d.String()
	}
	return "unknown"
}

// callVerdict is what the rules did to one call.
type callVerdict struct {
	rule     string // the rule that blocked it
	status   int
	refer    string // a REFER of the call that was refused
	observed []string
	suspect  []string
}

func callVerdicts(a *replay.Analysis) []callVerdict {
	out := make([]callVerdict, len(a.Calls))
	for _, b := range a.Result.Blocks {
		if b.Kind == "register" || b.Index >= len(out) {
			continue
		}
		v := &out[b.Index]
		switch {
		case b.Kind == "refer":
			v.refer = b.Rule
		case v.rule == "":
			v.rule, v.status = b.Rule, b.Status
		}
	}
	for i, t := range a.Result.Trips {
		ci := a.TripCall[i]
		if ci < 0 {
			continue
		}
		v := &out[ci]
		switch t.Action {
		case replay.TripSuspect:
			if !slices.Contains(v.suspect, t.Rule) {
				v.suspect = append(v.suspect, t.Rule)
			}
		case "observed":
			if !slices.Contains(v.observed, t.Rule) {
				v.observed = append(v.observed, t.Rule)
			}
		}
	}
	return out
}

func printAnalysis(w io.Writer, runs []analyzeRun, polName string, mask func(string) string) {
	fmt.Fprintf(w, "policy: %s\n", polName)
	for _, r := range runs {
		name := r.kind + " " + r.source
		if len(r.files) > 1 {
			name = fmt.Sprintf("captures (%d files, one stream)", len(r.files))
		}
		fmt.Fprintf(w, "\n%s: %d call%s, replayed in %s\n", name, len(r.a.Calls), plural(len(r.a.Calls)), r.took.Round(time.Millisecond))
		for i, st := range r.stats {
			fmt.Fprintf(w, "  %s (%s): %d packets, %d SIP messages", r.files[i], st.Format, st.Packets, st.Messages)
			if st.Undecoded > 0 {
				fmt.Fprintf(w, ", %d packets not IP/UDP/TCP/SCTP", st.Undecoded)
			}
			if st.Reassembled > 0 || st.FragmentsDropped > 0 {
				fmt.Fprintf(w, ", %d datagrams reassembled from fragments (%d given up)", st.Reassembled, st.FragmentsDropped)
			}
			if st.TCPResyncs > 0 {
				fmt.Fprintf(w, ", TCP: %d bytes lost in %d gaps", st.TCPBytesDropped, st.TCPResyncs)
			}
			fmt.Fprintln(w)
		}
		if r.a.Skipped > 0 {
			fmt.Fprintf(w, "  %d messages not readable as SIP, left out\n", r.a.Skipped)
		}
		ls := make([]string, len(r.a.Lines))
		for i, l := range r.a.Lines {
			ls[i] = mask(l)
		}
		if len(ls) == 0 {
			ls = []string{"none (no rule that needs a line applies; pass --lines)"}
		}
		fmt.Fprintf(w, "  lines (%s): %s\n", r.linesFrom, strings.Join(ls, ", "))
	}
	fmt.Fprintln(w, "\ncalls")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tstart\tdir\tline\tremote\tring\tstatus\ttalk\tbye\tattempt\tverdict")
	_ = eachCall(runs, mask, func(c *callJSON) error {
		verdict := c.Verdict
		if c.Rule != "" {
			verdict = fmt.Sprintf("blocked %d %s", c.BlockStatus, c.Rule)
		}
		for _, r := range c.Suspect {
			verdict += "; suspect " + r
		}
		for _, r := range c.Observed {
			verdict += "; observed " + r
		}
		att := ""
		if c.Attempt > 0 {
			att = strconv.Itoa(c.Attempt)
		}
		status := ""
		if c.Status > 0 {
			status = strconv.Itoa(c.Status)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.N, strconv.FormatFloat(c.Start, 'f', 1, 64)+"s", c.Direction[:min(3, len(c.Direction))], dash(c.Line), c.Remote,
			secs(c.Ring), dash(status), secs(c.Talk), dash(c.Bye), dash(att), verdict)
		return nil
	})
	tw.Flush()
	fmt.Fprintln(w, "\nlines")
	for _, l := range lineReports(runs, mask) {
		fmt.Fprintf(w, "  %s (%s): %d outbound attempt%s, first suspect %s, first block %s\n", l.Line, l.Source, l.Attempts, plural(l.Attempts), nth(l.FirstSuspect), nth(l.FirstBlock))
		for _, r := range l.Rules {
			fmt.Fprintf(w, "    %s %s x%d, first at attempt %s: %s\n", r.Rule, r.Action, r.Count, nth(r.FirstAttempt), figures(r.Evidence))
		}
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func secs(s float64) string {
	if s == 0 {
		return "-"
	}
	return strconv.FormatFloat(s, 'f', 1, 64) + "s"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nth(p *int) string {
	if p == nil {
		return "none"
	}
	return "#" + strconv.Itoa(*p)
}

// figures prints a violation's evidence as key=value, keys sorted.
func figures(ev map[string]any) string {
	if len(ev) == 0 {
		return "(no figures)"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(ev)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", k, ev[k])
	}
	return b.String()
}
