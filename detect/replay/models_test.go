package replay

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

const testLine = "+15551230001"

// seeds is how many traces each test draws per model: enough for the
// ranges below to be checked against the tails, not just the middle.
const seeds = 200

func generate(m Model, seed uint64) Trace {
	return m.Generate(rand.New(rand.NewPCG(seed, 0x1eadc0de)), testLine)
}

func modelByName(t testing.TB, name string) Model {
	t.Helper()
	for _, m := range Models() {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no model %q", name)
	return Model{}
}

// TestModelsDeclared pins the list of models, their class and their rule:
// the evaluation's report is read against these.
func TestModelsDeclared(t *testing.T) {
	want := []struct {
		name  string
		class Class
		rule  string
	}{
		{"human.manual_leads", Human, ""},
		{"human.click_to_call", Human, ""},
		{"human.call_center", Human, ""},
		{"human.receptionist", Human, ""},
		{"human.callbacks", Human, ""},
		{"human.voicemail_dropper", Human, ""},
		{"human.manual_dialer", Human, ""},
		{"human.steady_seller", Human, ""},
		{"machine.power", Machine, "pacing"},
		{"machine.progressive", Machine, "pacing"},
		{"machine.predictive", Machine, "pacing"},
		{"machine.jitter", Machine, "pacing"},
		{"machine.sequential", Machine, "pacing"},
		{"machine.predictive_amd", Machine, "pacing"},
		{"machine.power_amd", Machine, "pacing"},
		{"machine.jitter_timeout", Machine, "pacing"},
		{"machine.sequential_pace", Machine, "pacing"},
		{"forwarding.redirect", Forwarding, "forwarding.redirect"},
		{"forwarding.diversion", Forwarding, "forwarding.diversion"},
		{"forwarding.refer", Forwarding, "forwarding.refer"},
		{"forwarding.feature_code", Forwarding, "forwarding.feature_code"},
		{"forwarding.bridge", Forwarding, "forwarding.bridge"},
		{"trunking.concurrent", Trunking, "trunking.concurrent"},
		{"trunking.registrations", Trunking, "trunking.registrations"},
		{"honest.pbx", Honest, ""},
	}
	got := Models()
	if len(got) != len(want) {
		t.Fatalf("%d models, want %d", len(got), len(want))
	}
	for i, w := range want {
		m := got[i]
		if m.Name != w.name || m.Class != w.class || m.Rule != w.rule {
			t.Errorf("model %d = %s/%s/%q, want %s/%s/%q", i, m.Name, m.Class, m.Rule, w.name, w.class, w.rule)
		}
		if m.About == "" || m.Generate == nil {
			t.Errorf("%s: About or Generate missing", m.Name)
		}
	}
}

// TestTraces checks what every trace of every model must satisfy.
func TestTraces(t *testing.T) {
	for _, m := range Models() {
		t.Run(m.Name, func(t *testing.T) {
			for seed := range uint64(seeds) {
				tr := generate(m, seed)
				for _, err := range checkTrace(m, tr) {
					t.Errorf("seed %d: %v", seed, err)
				}
				if t.Failed() {
					return
				}
			}
		})
	}
}

func checkTrace(m Model, tr Trace) []error {
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if tr.Model != m.Name || tr.Class != m.Class || tr.Rule != m.Rule {
		fail("trace labelled %s/%s/%q", tr.Model, tr.Class, tr.Rule)
	}
	if !slices.Equal(tr.Lines, []string{testLine}) {
		fail("lines %v", tr.Lines)
	}
	if !slices.IsSortedFunc(tr.Calls, func(a, b Call) int { return int(a.Start - b.Start) }) {
		fail("calls not sorted by start")
	}
	if !slices.IsSortedFunc(tr.Registers, func(a, b Register) int { return int(a.At - b.At) }) {
		fail("registers not sorted by time")
	}
	if len(tr.Calls) == 0 && len(tr.Registers) == 0 {
		fail("empty trace")
	}
	for i, c := range tr.Calls {
		if err := checkCall(m, c); err != nil {
			fail("call %d at %v: %v", i, c.Start, err)
		}
	}
	switch m.Class {
	case Human, Honest:
		if i := firstOverlap(tr.Calls); i >= 0 {
			fail("call %d at %v starts before the one before it ended at %v", i, tr.Calls[i].Start, hangUpAt(tr.Calls[i-1]))
		}
		if hosts := contactHosts(tr.Registers); len(hosts) != 1 {
			fail("registered from %d hosts, want 1", len(hosts))
		}
	case Machine:
		if n := outbound(tr.Calls); n < 40 {
			fail("%d outbound attempts, want >= 40", n)
		}
	}
	if check := scenarioChecks[m.Name]; check != nil {
		if err := check(tr); err != nil {
			fail("%v", err)
		}
	}
	return errs
}

// checkCall holds each call to what the replay can turn into SIP.
func checkCall(m Model, c Call) error {
	switch {
	case c.Start < 0:
		return fmt.Errorf("negative start")
	case c.Direction != detect.Outbound && c.Direction != detect.Inbound:
		return fmt.Errorf("direction %v", c.Direction)
	case c.Ring <= 0:
		return fmt.Errorf("ring %v", c.Ring)
	case c.Status == 200 && c.Talk <= 0, c.Status != 200 && c.Talk != 0:
		return fmt.Errorf("status %d with talk %v", c.Status, c.Talk)
	case c.Early != 0 && c.Ring <= time.Second:
		return fmt.Errorf("early %d but the final response comes at %v", c.Early, c.Ring)
	case c.ReferAfter != 0 && c.ReferAfter >= c.Talk:
		return fmt.Errorf("refer after %v of %v talk", c.ReferAfter, c.Talk)
	case c.Line != "" && c.Line != testLine:
		return fmt.Errorf("line %q", c.Line)
	case c.Line == "" && m.Name != "forwarding.diversion":
		return fmt.Errorf("call not on the line")
	}
	if !slices.Contains([]int{180, 181, 183, 0}, c.Early) {
		return fmt.Errorf("early %d", c.Early)
	}
	if !slices.Contains([]int{200, 302, 404, 480, 486, 487}, c.Status) {
		return fmt.Errorf("status %d", c.Status)
	}
	if c.Status == 302 && c.Direction != detect.Inbound {
		return fmt.Errorf("redirect of an outbound call")
	}
	if m.Name == "forwarding.feature_code" && c.Remote[0] == '*' {
		return nil
	}
	return checkE164(c.Remote)
}

// checkE164 accepts the US numbers the models promise: +1, an NPA 201-989
// that is not N11, an NXX 200-999 that is not N11.
func checkE164(n string) error {
	if len(n) != 12 || !strings.HasPrefix(n, "+1") {
		return fmt.Errorf("remote %q is not +1 and 10 digits", n)
	}
	if _, err := strconv.Atoi(n[2:]); err != nil {
		return fmt.Errorf("remote %q: %v", n, err)
	}
	npa, _ := strconv.Atoi(n[2:5])
	nxx, _ := strconv.Atoi(n[5:8])
	if npa < 201 || npa > 989 || npa%100 == 11 || nxx < 200 || nxx%100 == 11 {
		return fmt.Errorf("remote %q: NPA %d NXX %d", n, npa, nxx)
	}
	return nil
}

// firstOverlap is the index of the first call that starts before the one
// before it ends, or -1.
func firstOverlap(calls []Call) int {
	for i := 1; i < len(calls); i++ {
		if calls[i].Start < hangUpAt(calls[i-1]) {
			return i
		}
	}
	return -1
}

func outbound(calls []Call) int {
	n := 0
	for _, c := range calls {
		if c.Direction == detect.Outbound {
			n++
		}
	}
	return n
}

func contactHosts(regs []Register) map[string]bool {
	hosts := map[string]bool{}
	for _, g := range regs {
		hosts[hostOf(g.Contact)] = true
	}
	return hosts
}

// maxConcurrent is the most calls up on the line at once.
func maxConcurrent(calls []Call) int {
	most := 0
	for i, c := range calls {
		n := 1
		for _, d := range calls[:i] {
			if d.Line == c.Line && hangUpAt(d) > c.Start {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// scenarioChecks hold each model to what it claims to model.
var scenarioChecks = map[string]func(Trace) error{
	"machine.power": func(tr Trace) error {
		// Starts fall on the ticks of one period, give or take the timer.
		first, period := tr.Calls[0].Start, time.Duration(0)
		for i := 1; i < len(tr.Calls); i++ {
			if d := tr.Calls[i].Start - tr.Calls[i-1].Start; period == 0 || d < period {
				period = d.Round(time.Second)
			}
		}
		for _, c := range tr.Calls {
			off := (c.Start - first) % period
			if off > 60*time.Millisecond && period-off > 60*time.Millisecond {
				return fmt.Errorf("start %v is %v off the %v ticks", c.Start, off, period)
			}
		}
		return nil
	},
	"machine.progressive": func(tr Trace) error {
		for i := 1; i < len(tr.Calls); i++ {
			if gap := tr.Calls[i].Start - hangUpAt(tr.Calls[i-1]); gap <= 0 || gap >= time.Second {
				return fmt.Errorf("gap %v before call %d", gap, i)
			}
		}
		return nil
	},
	"machine.jitter": func(tr Trace) error {
		for i := 1; i < len(tr.Calls); i++ {
			if gap := tr.Calls[i].Start - hangUpAt(tr.Calls[i-1]); gap < time.Second {
				return fmt.Errorf("gap %v before call %d", gap, i)
			}
		}
		return nil
	},
	"machine.predictive": func(tr Trace) error {
		if n := maxConcurrent(tr.Calls); n < 2 || n > 4 {
			return fmt.Errorf("at most %d calls at once, want 2-3 (4 with a dial-ahead round)", n)
		}
		for _, c := range tr.Calls {
			if c.Status == 487 {
				return nil
			}
		}
		return fmt.Errorf("no attempt cancelled")
	},
	"machine.sequential": func(tr Trace) error {
		for i := 1; i < len(tr.Calls); i++ {
			a, _ := strconv.Atoi(tr.Calls[i-1].Remote[2:])
			b, _ := strconv.Atoi(tr.Calls[i].Remote[2:])
			if b-a < 1 || b-a > 10 {
				return fmt.Errorf("step %d from %s to %s", b-a, tr.Calls[i-1].Remote, tr.Calls[i].Remote)
			}
		}
		return nil
	},
	"forwarding.redirect": func(tr Trace) error {
		c := tr.Calls[len(tr.Calls)-1]
		if c.Direction != detect.Inbound || !(c.Status == 302 || c.Early == 181 && c.EarlyDiversion) {
			return fmt.Errorf("last call %+v is neither a redirect nor announced as forwarded", c)
		}
		return nil
	},
	"forwarding.diversion": func(tr Trace) error {
		for _, c := range tr.Calls {
			if c.Direction != detect.Outbound || c.Line != "" {
				continue
			}
			named := len(c.Diversion) > 0 && c.Diversion[0] == testLine
			if len(c.HistoryInfo) > 0 {
				named = named || c.HistoryInfo[0] == "<sip:"+testLine+"@pbx.example;cause=302>;index=1"
			}
			if !named || c.From == "" || c.From == testLine {
				return fmt.Errorf("onward leg %+v does not name the line or present the caller", c)
			}
			return nil
		}
		return fmt.Errorf("no onward leg")
	},
	"forwarding.refer": func(tr Trace) error {
		for _, c := range tr.Calls {
			if c.ReferAfter > 0 && c.Status == 200 {
				return nil
			}
		}
		return fmt.Errorf("no REFER")
	},
	"forwarding.feature_code": func(tr Trace) error {
		if c := tr.Calls[len(tr.Calls)-1]; c.Direction != detect.Outbound || c.Remote[0] != '*' {
			return fmt.Errorf("last call %q is not a feature code", c.Remote)
		}
		return nil
	},
	"forwarding.bridge": func(tr Trace) error {
		in, out := tr.Calls[len(tr.Calls)-2], tr.Calls[len(tr.Calls)-1]
		switch {
		case in.Direction != detect.Inbound || out.Direction != detect.Outbound:
			return fmt.Errorf("not an inbound then an outbound call")
		case out.Start-in.Start > 10*time.Second:
			return fmt.Errorf("outbound leg %v after the inbound", out.Start-in.Start)
		case hangUpAt(in) < hangUpAt(out):
			return fmt.Errorf("inbound ends before the bridged leg")
		case out.Remote == in.Remote:
			return fmt.Errorf("bridged back to the caller")
		}
		return nil
	},
	"trunking.concurrent": func(tr Trace) error {
		if n := maxConcurrent(tr.Calls); n < 2 {
			return fmt.Errorf("at most %d calls at once", n)
		}
		return nil
	},
	"trunking.registrations": func(tr Trace) error {
		// Some register of another host falls within a live binding.
		for i, a := range tr.Registers {
			for _, b := range tr.Registers[i+1:] {
				if hostOf(a.Contact) != hostOf(b.Contact) && b.At < a.At+time.Duration(a.Expires)*time.Second {
					return nil
				}
			}
		}
		return fmt.Errorf("no two hosts registered at once")
	},
	"honest.pbx": func(tr Trace) error {
		for i := 1; i < len(tr.Registers); i++ {
			a, b := tr.Registers[i-1], tr.Registers[i]
			if a.Contact != b.Contact {
				return fmt.Errorf("contact changed from %s to %s", a.Contact, b.Contact)
			}
			if d := b.At - a.At; d < 300*time.Second || d > 3601*time.Second {
				return fmt.Errorf("re-registered after %v", d)
			}
		}
		if len(tr.Registers) < 2 {
			return fmt.Errorf("%d registers", len(tr.Registers))
		}
		return nil
	},
}

func TestDeterministic(t *testing.T) {
	for _, m := range Models() {
		t.Run(m.Name, func(t *testing.T) {
			a, b := generate(m, 7), generate(m, 7)
			if !reflect.DeepEqual(a, b) {
				t.Fatal("two traces from one seed differ")
			}
			if c := generate(m, 8); reflect.DeepEqual(a, c) {
				t.Fatal("two seeds gave the same trace")
			}
		})
	}
}

// TestMachineSessionsDiffer checks that a machine's parameters are drawn
// per session: a rule tuned to one session's figures would miss the next.
func TestMachineSessionsDiffer(t *testing.T) {
	for _, m := range Models() {
		if m.Class != Machine {
			continue
		}
		t.Run(m.Name, func(t *testing.T) {
			medians := map[time.Duration]bool{}
			for seed := range uint64(20) {
				medians[median(outboundGaps(generate(m, seed).Calls)).Round(100*time.Millisecond)] = true
			}
			if len(medians) < 5 {
				t.Errorf("20 sessions show %d distinct median gaps", len(medians))
			}
		})
	}
}

// outboundGaps are the times from the end of the call before each outbound
// attempt (of either direction) to that attempt: what a rule on the gap
// after a hang-up sees.
func outboundGaps(calls []Call) []time.Duration {
	var gaps []time.Duration
	for i := 1; i < len(calls); i++ {
		if calls[i].Direction == detect.Outbound {
			gaps = append(gaps, calls[i].Start-hangUpAt(calls[i-1]))
		}
	}
	return gaps
}

func median(xs []time.Duration) time.Duration { return percentile(xs, 50) }

func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

// dayFigures are the figures of one trace a pacing rule could measure.
type dayFigures struct {
	attempts    int
	perMinute   int // most outbound attempts starting in any 60 s
	per10Min    int // ... in any 10 minutes
	perHour     int // ... in any hour
	redials     int // same number again within 60 s of the last hang-up
	repeats     int // a number already dialed earlier in the trace
	seqRun      int // longest run of callees each 1-10 above the last
	fastGaps    int // most gaps under 3 s among any 10 consecutive attempts
	fastRun     int // longest run of consecutive gaps under 3 s
	inbound     int
	minCV       float64
	gaps        []time.Duration
	shortestGap time.Duration
}

func figures(tr Trace) dayFigures {
	var f dayFigures
	var starts []time.Duration
	var out []Call
	for _, c := range tr.Calls {
		if c.Direction == detect.Outbound {
			starts = append(starts, c.Start)
			out = append(out, c)
		}
	}
	f.attempts = len(out)
	f.perMinute = mostWithin(starts, time.Minute)
	f.per10Min = mostWithin(starts, 10*time.Minute)
	f.perHour = mostWithin(starts, time.Hour)
	f.gaps = outboundGaps(tr.Calls)
	f.shortestGap = time.Duration(1 << 62)
	for _, g := range f.gaps {
		f.shortestGap = min(f.shortestGap, g)
	}
	seen := map[string]bool{}
	run := 1
	for i, c := range out {
		if seen[c.Remote] {
			f.repeats++
		}
		seen[c.Remote] = true
		if i == 0 {
			continue
		}
		prev := out[i-1]
		if c.Remote == prev.Remote && c.Start-hangUpAt(prev) < time.Minute {
			f.redials++
		}
		a, _ := strconv.Atoi(prev.Remote[2:])
		b, _ := strconv.Atoi(c.Remote[2:])
		if b-a >= 1 && b-a <= 10 {
			run++
		} else {
			run = 1
		}
		f.seqRun = max(f.seqRun, run)
	}
	f.minCV, f.fastGaps = regularity(tr.Calls)
	run = 0
	for _, g := range f.gaps {
		if g < 3*time.Second {
			run++
			f.fastRun = max(f.fastRun, run)
		} else {
			run = 0
		}
	}
	f.inbound = len(tr.Calls) - f.attempts
	return f
}

func mostWithin(starts []time.Duration, window time.Duration) int {
	most, j := 0, 0
	for i := range starts {
		for starts[i]-starts[j] >= window {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// regularity is the smallest coefficient of variation of the start-to-start
// intervals over any 10 consecutive outbound attempts, and the most gaps
// after a hang-up under 3 s among any 10 consecutive attempts.
func regularity(calls []Call) (float64, int) {
	var starts []time.Duration
	var fast []bool
	for i, c := range calls {
		if c.Direction != detect.Outbound {
			continue
		}
		starts = append(starts, c.Start)
		fast = append(fast, i > 0 && c.Start-hangUpAt(calls[i-1]) < 3*time.Second)
	}
	minCV, mostFast := 1e9, 0
	for i := 0; i+10 <= len(starts); i++ {
		var sum, sq float64
		for k := i + 1; k < i+10; k++ {
			d := (starts[k] - starts[k-1]).Seconds()
			sum += d
			sq += d * d
		}
		mean := sum / 9
		variance := max(0, sq/9-mean*mean)
		minCV = min(minCV, math.Sqrt(variance)/mean)
		n := 0
		for _, f := range fast[i : i+10] {
			if f {
				n++
			}
		}
		mostFast = max(mostFast, n)
	}
	return minCV, mostFast
}

// humanBands are the figures docs/eval-models.md documents for each human
// model, over the traces of seeds 0-199: outbound attempts of every day,
// the 5th percentile and median of the gaps from a hang-up to the next
// outbound attempt (pooled), the shortest gap any day may hold, and the
// share of attempts redialing the number just called within 60 s.
var humanBands = []struct {
	model    string
	attempts [2]int
	gapP5    [2]time.Duration
	gapP50   [2]time.Duration
	shortest time.Duration
	redials  [2]float64
}{
	{"human.manual_leads", [2]int{50, 300}, [2]time.Duration{3 * time.Second, 7 * time.Second}, [2]time.Duration{35 * time.Second, 60 * time.Second}, 1500 * time.Millisecond, [2]float64{0.06, 0.12}},
	{"human.click_to_call", [2]int{150, 300}, [2]time.Duration{1500 * time.Millisecond, 3 * time.Second}, [2]time.Duration{4 * time.Second, 9 * time.Second}, 1200 * time.Millisecond, [2]float64{0.05, 0.11}},
	{"human.call_center", [2]int{100, 400}, [2]time.Duration{7 * time.Second, 13 * time.Second}, [2]time.Duration{18 * time.Second, 32 * time.Second}, 1500 * time.Millisecond, [2]float64{0.005, 0.03}},
	{"human.receptionist", [2]int{1, 30}, [2]time.Duration{3 * time.Second, 6 * time.Second}, [2]time.Duration{10 * time.Second, 60 * time.Second}, 2 * time.Second, [2]float64{0, 0}},
	{"human.callbacks", [2]int{50, 280}, [2]time.Duration{3 * time.Second, 7 * time.Second}, [2]time.Duration{30 * time.Second, 60 * time.Second}, 1500 * time.Millisecond, [2]float64{0.05, 0.11}},
	{"human.voicemail_dropper", [2]int{150, 300}, [2]time.Duration{1500 * time.Millisecond, 3 * time.Second}, [2]time.Duration{4 * time.Second, 9 * time.Second}, 1200 * time.Millisecond, [2]float64{0.05, 0.11}},
	{"human.manual_dialer", [2]int{50, 350}, [2]time.Duration{3 * time.Second, 7 * time.Second}, [2]time.Duration{15 * time.Second, 35 * time.Second}, 1500 * time.Millisecond, [2]float64{0.06, 0.12}},
	{"human.steady_seller", [2]int{30, 100}, [2]time.Duration{3 * time.Second, 7 * time.Second}, [2]time.Duration{time.Minute, 4 * time.Minute}, 1500 * time.Millisecond, [2]float64{0.05, 0.11}},
}

func TestHumanFigures(t *testing.T) {
	for _, b := range humanBands {
		t.Run(b.model, func(t *testing.T) {
			m := modelByName(t, b.model)
			var gaps []time.Duration
			attempts, redials := 0, 0
			for seed := range uint64(seeds) {
				f := figures(generate(m, seed))
				if f.attempts < b.attempts[0] || f.attempts > b.attempts[1] {
					t.Errorf("seed %d: %d attempts, documented %d-%d", seed, f.attempts, b.attempts[0], b.attempts[1])
				}
				if len(f.gaps) > 0 && f.shortestGap < b.shortest {
					t.Errorf("seed %d: a gap of %v, documented >= %v", seed, f.shortestGap, b.shortest)
				}
				gaps = append(gaps, f.gaps...)
				attempts += f.attempts
				redials += f.redials
			}
			if p := percentile(gaps, 5); p < b.gapP5[0] || p > b.gapP5[1] {
				t.Errorf("5th percentile gap %v, documented %v-%v", p, b.gapP5[0], b.gapP5[1])
			}
			if p := percentile(gaps, 50); p < b.gapP50[0] || p > b.gapP50[1] {
				t.Errorf("median gap %v, documented %v-%v", p, b.gapP50[0], b.gapP50[1])
			}
			if share := float64(redials) / float64(attempts); share < b.redials[0] || share > b.redials[1] {
				t.Errorf("redials %.3f of attempts, documented %.3f-%.3f", share, b.redials[0], b.redials[1])
			}
		})
	}
}

// documentedFigures are the figures docs/eval-models.md gives for the
// machine models (its table "Machine figures over 200 sessions") and for
// honest.pbx, each with the unit of its last written digit: a figure
// matches when it rounds to the documented one. The human models' tables
// are checked as ranges by TestHumanFigures.
var documentedFigures = map[string][]struct {
	figure     string
	want, unit float64
}{
	"machine.power": {{"gap p1 s", 0.7, 0.1}, {"gap p50 s", 15, 1}, {"gap p95 s", 43, 1},
		{"gaps under 3 s %", 12, 1}, {"most in 60 s, lowest day", 2, 1}, {"most in 60 s, highest day", 6, 1}, {"smallest CV p5", 0, 0.01}},
	"machine.progressive": {{"gap p1 s", 0.1, 0.1}, {"gap p50 s", 0.4, 0.1}, {"gap p95 s", 0.8, 0.1},
		{"gaps under 3 s %", 100, 1}, {"most in 60 s, lowest day", 3, 1}, {"most in 60 s, highest day", 10, 1}, {"smallest CV p5", 0, 0.01}},
	// "78 % of attempts start while another call is up or under a second
	// after one ended": a gap under 1 s, negative when calls overlap.
	"machine.predictive": {{"gaps under 1 s %", 78, 1},
		{"most in 60 s, lowest day", 6, 1}, {"most in 60 s, highest day", 12, 1}, {"smallest CV p5", 0.87, 0.01}},
	"machine.jitter": {{"gap p1 s", 1.1, 0.1}, {"gap p50 s", 5.1, 0.1}, {"gap p95 s", 15, 1},
		{"gaps under 3 s %", 28, 1}, {"most in 60 s, lowest day", 3, 1}, {"most in 60 s, highest day", 7, 1}, {"smallest CV p5", 0.04, 0.01}},
	"machine.sequential": {{"gap p1 s", 10, 1}, {"gap p50 s", 24, 1}, {"gap p95 s", 57, 1},
		{"gaps under 3 s %", 0, 1}, {"most in 60 s, lowest day", 3, 1}, {"most in 60 s, highest day", 5, 1}, {"smallest CV p5", 0.12, 0.01}},
	"machine.predictive_amd": {{"gaps under 1 s %", 79, 1},
		{"most in 60 s, lowest day", 5, 1}, {"most in 60 s, highest day", 12, 1}, {"smallest CV p5", 0.43, 0.01}},
	"machine.power_amd": {{"gap p1 s", 2.1, 0.1}, {"gap p50 s", 9.3, 0.1}, {"gap p95 s", 19, 1},
		{"gaps under 3 s %", 3, 1}, {"most in 60 s, lowest day", 3, 1}, {"most in 60 s, highest day", 7, 1}, {"smallest CV p5", 0.05, 0.01}},
	"machine.jitter_timeout": {{"gap p1 s", 1.1, 0.1}, {"gap p50 s", 5.7, 0.1}, {"gap p95 s", 16, 1},
		{"gaps under 3 s %", 25, 1}, {"most in 60 s, lowest day", 4, 1}, {"most in 60 s, highest day", 8, 1}, {"smallest CV p5", 0.06, 0.01}},
	"machine.sequential_pace": {{"gap p1 s", 9.7, 0.1}, {"gap p50 s", 24, 1}, {"gap p95 s", 56, 1},
		{"gaps under 3 s %", 0, 1}, {"most in 60 s, lowest day", 3, 1}, {"most in 60 s, highest day", 5, 1}, {"smallest CV p5", 0.13, 0.01}},
	"honest.pbx": {
		{"inbound/day p0", 9, 1}, {"inbound/day p5", 14, 1}, {"inbound/day p50", 28, 1}, {"inbound/day p95", 40, 1}, {"inbound/day p100", 46, 1},
		{"attempts/day p0", 1, 1}, {"attempts/day p5", 3, 1}, {"attempts/day p50", 9, 1}, {"attempts/day p95", 13, 1}, {"attempts/day p100", 20, 1},
		{"gap p1 s", 7.2, 0.1}, {"gap p5 s", 12, 1}, {"gap p50 min", 3.4, 0.1}},
}

// TestLogFigures measures the figures a pacing rule could measure on each
// human, honest and machine model, over the traces of seeds 0-199, and
// fails when one that docs/eval-models.md documents (documentedFigures)
// drifted from it. With -v it prints them all: the source of the tables
// in docs/eval-models.md.
func TestLogFigures(t *testing.T) {
	measured := 0
	for _, m := range Models() {
		if m.Class != Human && m.Class != Machine && m.Class != Honest {
			continue
		}
		t.Run(m.Name, func(t *testing.T) {
			var att, pm, p10, ph, red, rep, seq, fast, fastRun, in []int
			var cv []float64
			var gaps, shortest []time.Duration
			for seed := range uint64(seeds) {
				f := figures(generate(m, seed))
				att = append(att, f.attempts)
				pm = append(pm, f.perMinute)
				p10 = append(p10, f.per10Min)
				ph = append(ph, f.perHour)
				red = append(red, f.redials)
				rep = append(rep, f.repeats)
				seq = append(seq, f.seqRun)
				fast = append(fast, f.fastGaps)
				fastRun = append(fastRun, f.fastRun)
				in = append(in, f.inbound)
				if f.attempts >= 10 {
					cv = append(cv, f.minCV)
				}
				gaps = append(gaps, f.gaps...)
				shortest = append(shortest, f.shortestGap)
			}
			for _, xs := range [][]int{att, pm, p10, ph, seq, fast, fastRun, in} {
				slices.Sort(xs)
			}
			// The lowest, 5th percentile, median, 95th percentile and highest
			// of the days.
			q := func(xs []int) [5]int {
				return [5]int{xs[0], xs[len(xs)/20], xs[len(xs)/2], xs[len(xs)*19/20], xs[len(xs)-1]}
			}
			qs := func(xs []int) string { v := q(xs); return fmt.Sprintf("%d/%d/%d/%d/%d", v[0], v[1], v[2], v[3], v[4]) }
			slices.Sort(cv)
			if len(cv) == 0 {
				cv = []float64{0}
			}
			slices.Sort(gaps)
			slices.Sort(shortest)
			sumAtt, sumRed, sumRep := 0, 0, 0
			for i := range att {
				sumAtt += att[i]
				sumRed += red[i]
				sumRep += rep[i]
			}
			redialShare := float64(sumRed) / float64(sumAtt)
			pct := func(p float64) time.Duration { return percentile(gaps, p).Round(100 * time.Millisecond) }
			t.Logf("%s\n  attempts/day %s\n  max/min %s  max/10min %s  max/hour %s\n  gaps p0.1 %v p1 %v p5 %v p25 %v p50 %v p75 %v p95 %v\n  shortest gap of a day: min %v p5 %v p50 %v\n  redials within 60 s %.1f%%, repeats %.1f%%  seqrun %s  fast(<3s) gaps in 10: %s  minCV p0 %.2f p5 %.2f p50 %.2f",
				m.Name, qs(att), qs(pm), qs(p10), qs(ph),
				pct(0.1), pct(1), pct(5), pct(25), pct(50), pct(75), pct(95),
				shortest[0].Round(100*time.Millisecond), shortest[len(shortest)/20].Round(100*time.Millisecond), shortest[len(shortest)/2].Round(100*time.Millisecond),
				100*redialShare, 100*float64(sumRep)/float64(sumAtt), qs(seq), qs(fast), cv[0], cv[len(cv)/20], cv[len(cv)/2])
			below := func(d time.Duration) float64 {
				n, _ := slices.BinarySearch(gaps, d)
				return 100 * float64(n) / float64(max(1, len(gaps)))
			}
			t.Logf("%s: inbound/day %s; gaps under 1 s %.2f%%, 2 s %.2f%%, 3 s %.2f%%, 5 s %.2f%%, 10 s %.2f%%; longest run of gaps under 3 s %s",
				m.Name, qs(in), below(time.Second), below(2*time.Second), below(3*time.Second), below(5*time.Second), below(10*time.Second), qs(fastRun))

			docs, ok := documentedFigures[m.Name]
			if !ok {
				return
			}
			measured++
			got := map[string]float64{
				"gap p1 s":                  percentile(gaps, 1).Seconds(),
				"gap p5 s":                  percentile(gaps, 5).Seconds(),
				"gap p50 s":                 percentile(gaps, 50).Seconds(),
				"gap p50 min":               percentile(gaps, 50).Minutes(),
				"gap p95 s":                 percentile(gaps, 95).Seconds(),
				"gaps under 1 s %":          below(time.Second),
				"gaps under 3 s %":          below(3 * time.Second),
				"most in 60 s, lowest day":  float64(pm[0]),
				"most in 60 s, highest day": float64(pm[len(pm)-1]),
				"smallest CV p5":            cv[len(cv)/20],
			}
			for _, day := range []struct {
				name string
				xs   []int
			}{{"inbound/day", in}, {"attempts/day", att}} {
				for i, p := range []string{"p0", "p5", "p50", "p95", "p100"} {
					got[day.name+" "+p] = float64(q(day.xs)[i])
				}
			}
			for _, d := range docs {
				g, ok := got[d.figure]
				if !ok {
					t.Fatalf("no figure %q is measured", d.figure)
				}
				// Half a unit either way, and a hair for the float arithmetic.
				if math.Abs(g-d.want) > d.unit/2+1e-9 {
					t.Errorf("%s is %.4g, documented %g", d.figure, g, d.want)
				}
			}
		})
	}
	if measured != len(documentedFigures) {
		t.Errorf("measured %d of the %d models with documented figures: a model was renamed or dropped", measured, len(documentedFigures))
	}
}

// BenchmarkGenerate measures one trace of each model: the evaluation draws
// 10,000 agent-days per human model.
func BenchmarkGenerate(b *testing.B) {
	for _, m := range Models() {
		b.Run(m.Name, func(b *testing.B) {
			b.ReportAllocs()
			r := rand.New(rand.NewPCG(1, 2))
			for b.Loop() {
				m.Generate(r, testLine)
			}
		})
	}
}
