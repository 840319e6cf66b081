package rules_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
)

// benchEngine has 10,000 lines and 1,000 calls up (one on each of the
// first 1,000 lines), as issue 4's benchmark asks.
func benchEngine(b *testing.B) (*rules.Engine, []string) {
	p := policy.Default()
	lines := make([]string, 10_000)
	for i := range lines {
		lines[i] = fmt.Sprintf("+1555%07d", i)
	}
	p.Lines = lines
	e := newEngine(b, p, rules.Options{})
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("up-%d", i)
		req := invite(id, "+12125550100", lines[i], detect.Inbound)
		if v := e.Decide(&detect.Event{At: t0, Direction: detect.Inbound, Line: lines[i], Remote: "+12125550100", Request: req}); v.Block {
			b.Fatalf("setup call %d blocked: %+v", i, v)
		}
		e.CallAnswered(dialog.Call{CallID: id, Line: lines[i], AnsweredAt: t0.Add(time.Second)})
	}
	if s := e.Stats(); s.Calls != 1000 {
		b.Fatalf("%d calls held, want 1000", s.Calls)
	}
	return e, lines
}

// BenchmarkDecide times one decision on the allow path: an initial
// outbound INVITE on one of the 9,000 idle lines (each line sees one call
// every 9,000 decisions, an hour of simulated time apart), plus the call's
// end that keeps the state steady. Target: < 5 us and no allocation.
func BenchmarkDecide(b *testing.B) {
	e, lines := benchEngine(b)
	const idle = 9000
	reqs := make([]*sip.Request, idle)
	evs := make([]detect.Event, idle)
	for i := range reqs {
		l := lines[1000+i]
		callee := fmt.Sprintf("+1212%07d", (i*7919)%10_000_000)
		reqs[i] = invite(fmt.Sprintf("c-%d", i), l, callee, detect.Outbound)
		evs[i] = detect.Event{Direction: detect.Outbound, Line: l, Remote: callee, Request: reqs[i]}
	}
	b.ReportAllocs()
	b.ResetTimer()
	at := t0
	for i := 0; i < b.N; i++ {
		k := i % idle
		// Steps differ from round to round, so that a line's intervals
		// vary as a person's do (neither regular nor on a timer's ticks)
		// and no pacing signal trips.
		r := i / idle
		at = at.Add(250*time.Millisecond + time.Duration(r*r%11)*53*time.Millisecond)
		ev := &evs[k]
		ev.At = at
		if v := e.Decide(ev); v.Block {
			b.Fatalf("decision %d blocked: %+v", i, v)
		}
		c := dialog.Call{CallID: callIDs(reqs[k]), Line: ev.Line, Direction: detect.Outbound, StartedAt: at, EndedAt: at.Add(30 * time.Second), Disposition: dialog.NoAnswer, FinalStatus: 480}
		if i%3 == 0 {
			// Every third call answered and hung up by the caller seconds
			// later, so that the hang-up signals measure (issue 15).
			c.AnsweredAt, c.Disposition, c.FinalStatus, c.EndedBy = at.Add(26*time.Second), dialog.Answered, 200, dialog.Caller
		}
		e.CallEnded(c)
	}
}

func callIDs(r *sip.Request) string { return r.CallID().Value() }

// BenchmarkDecideBusyLine: the INVITE that trunking.concurrent refuses on a
// line with a call up: the block path, which allocates its violation.
func BenchmarkDecideBusyLine(b *testing.B) {
	e, lines := benchEngine(b)
	req := invite("second", "+12125550111", lines[0], detect.Inbound)
	ev := &detect.Event{At: t0.Add(time.Minute), Direction: detect.Inbound, Line: lines[0], Remote: "+12125550111", Request: req}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if v := e.Decide(ev); !v.Block {
			b.Fatal("second call on a busy line allowed")
		}
	}
}

// BenchmarkDecideOtherTraffic: an INVITE of a number that is not a line,
// which the rules must pass quickly.
func BenchmarkDecideOtherTraffic(b *testing.B) {
	e, _ := benchEngine(b)
	req := invite("other", "+13125550100", "+12125550100", detect.Outbound)
	ev := &detect.Event{At: t0, Direction: detect.Outbound, Remote: "+12125550100", Request: req}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if v := e.Decide(ev); v.Block {
			b.Fatal("other traffic blocked")
		}
	}
}

// BenchmarkDecideTrunkLine: a call's three events (INVITE, answer, end)
// on a line that already has 2,000 calls up, every rule observing: a
// trunk, or a line being abused, in observe mode, where nothing bounds
// the calls a line holds. Each event finds the call among the line's.
func BenchmarkDecideTrunkLine(b *testing.B) {
	p := policy.Default()
	p.Lines = []string{"+15550000001"}
	p.Trunking.Action = policy.Observe
	p.Forwarding.Action = policy.Observe
	p.Pacing.Action = policy.Observe
	e := newEngine(b, p, rules.Options{})
	const up = 2000
	for i := 0; i < up; i++ {
		id := fmt.Sprintf("trunk-%d@pbx.example", i)
		req := invite(id, "+12125550100", p.Lines[0], detect.Inbound)
		e.Decide(&detect.Event{At: t0, Direction: detect.Inbound, Line: p.Lines[0], Remote: "+12125550100", Request: req})
		e.CallAnswered(dialog.Call{CallID: id, Line: p.Lines[0], AnsweredAt: t0.Add(time.Second)})
	}
	if s := e.Stats(); s.Calls != up {
		b.Fatalf("%d calls held, want %d", s.Calls, up)
	}
	const n = 1024
	reqs := make([]*sip.Request, n)
	for i := range reqs {
		reqs[i] = invite(fmt.Sprintf("new-%d@pbx.example", i), "+12125550177", p.Lines[0], detect.Inbound)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := reqs[i%n]
		at := t0.Add(time.Minute + time.Duration(i)*time.Millisecond)
		e.Decide(&detect.Event{At: at, Direction: detect.Inbound, Line: p.Lines[0], Remote: "+12125550177", Request: req})
		id := callIDs(req)
		e.CallAnswered(dialog.Call{CallID: id, Line: p.Lines[0], AnsweredAt: at})
		e.CallEnded(dialog.Call{CallID: id, Line: p.Lines[0], Direction: detect.Inbound, StartedAt: at, AnsweredAt: at, EndedAt: at.Add(time.Second), Disposition: dialog.Answered, FinalStatus: 200})
	}
}

// BenchmarkLineStateHeld reports what the rules keep per line (B/line:
// the live heap after a collection, less the engine's before any
// attempt) for 10,000 lines that each placed `attempts` outbound calls:
// one is a quiet line; twelve, two seconds apart, is a dialer whose line
// trips pacing and cools down, as every line does in make bench-proxy's
// overload runs, where every rule observes (`observe`) rather than
// blocks (the default policy). Under a memory budget this is what the
// collector scans and what admission control counts before a single
// call is up.
func BenchmarkLineStateHeld(b *testing.B) {
	for _, tc := range []struct {
		attempts int
		observe  bool
	}{{1, false}, {12, false}, {12, true}} {
		name := fmt.Sprintf("attempts=%d", tc.attempts)
		if tc.observe {
			name += "/observe"
		}
		b.Run(name, func(b *testing.B) {
			var perLine float64
			for range b.N {
				perLine = lineStateHeld(b, tc.attempts, tc.observe)
			}
			b.ReportMetric(perLine, "B/line")
		})
	}
}

func lineStateHeld(b *testing.B, attempts int, observe bool) float64 {
	p := policy.Default()
	lines := make([]string, 10_000)
	for i := range lines {
		lines[i] = fmt.Sprintf("+1555%07d", i)
	}
	p.Lines = lines
	if observe { // as bench-proxy.sh configures the agent
		p.Forwarding.Action, p.Trunking.Action, p.Pacing.Action = policy.Observe, policy.Observe, policy.Observe
		p.CallerID.Action, p.Quota.Action = policy.Observe, policy.Observe
	}
	e := newEngine(b, p, rules.Options{})
	reqs := make([]*sip.Request, 0, len(lines)*attempts)
	for k := range attempts {
		for i, l := range lines {
			reqs = append(reqs, invite(fmt.Sprintf("c-%d-%d", i, k), l, fmt.Sprintf("+1212%07d", (i*7919+k)%10_000_000), detect.Outbound))
		}
	}
	before := liveHeap()
	at := t0
	for k := range attempts {
		for i, l := range lines {
			req := reqs[k*len(lines)+i]
			e.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: l, Remote: req.To().Address.User, Request: req})
			e.CallEnded(dialog.Call{CallID: callIDs(req), Line: l, Direction: detect.Outbound, StartedAt: at,
				EndedAt: at.Add(time.Second), Disposition: dialog.NoAnswer, FinalStatus: 480})
		}
		at = at.Add(2 * time.Second)
	}
	after := liveHeap()
	runtime.KeepAlive(reqs)
	runtime.KeepAlive(e)
	return float64(after-before) / float64(len(lines))
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
