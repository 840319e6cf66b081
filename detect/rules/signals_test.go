package rules_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
)

// attempt is one outbound call for the signal tests: it starts gap after
// the previous one ended, rings for ring, and is answered for talk (0: it
// ends unanswered with status) and hung up by `by`.
type attempt struct {
	gap, ring, talk time.Duration
	status          int
	by              dialog.Party
	callee          string
}

// dial plays the attempts on the line from t0 and returns the verdicts
// and the violations reported.
func dial(t *testing.T, p policy.Policy, atts []attempt) ([]detect.Verdict, []rules.Violation) {
	t.Helper()
	var viols []rules.Violation
	e := newEngine(t, p, rules.Options{OnViolation: func(v rules.Violation) { viols = append(viols, v) }})
	at := t0
	var verdicts []detect.Verdict
	for i, a := range atts {
		at = at.Add(a.gap)
		id := fmt.Sprintf("s%d", i)
		callee := a.callee
		if callee == "" {
			callee = fmt.Sprintf("+1212%07d", (i*7919+13)%10_000_000)
		}
		req := invite(id, line, callee, detect.Outbound)
		v := e.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: line, Remote: callee, Request: req})
		verdicts = append(verdicts, v)
		c := dialog.Call{CallID: id, Line: line, Direction: detect.Outbound, Remote: callee, StartedAt: at}
		if v.Block {
			c.EndedAt, c.Disposition, c.FinalStatus = at, dialog.Blocked, 403
			e.CallEnded(c)
			continue
		}
		at = at.Add(a.ring)
		if a.talk > 0 {
			c.AnsweredAt, c.FinalStatus = at, 200
			e.CallAnswered(c)
			at = at.Add(a.talk)
			c.Disposition, c.EndedBy = dialog.Answered, a.by
		} else {
			c.FinalStatus = a.status
			c.Disposition = dialog.DispositionOf(a.status)
		}
		c.EndedAt = at
		e.CallEnded(c)
	}
	return verdicts, viols
}

func repeat(n int, a attempt) []attempt {
	out := make([]attempt, n)
	for i := range out {
		out[i] = a
		// Rings and gaps vary a little, as a person's do, so that only the
		// signal under test can trip.
		out[i].gap += time.Duration(i*i%7) * 1100 * time.Millisecond
		out[i].ring += time.Duration(i*i%5) * 370 * time.Millisecond
	}
	return out
}

func TestSuspectReports(t *testing.T) {
	amd := attempt{gap: 20 * time.Second, ring: 8 * time.Second, talk: 3 * time.Second, by: dialog.Caller}
	withPolicy := func(f func(p *policy.PacingRule)) policy.Policy {
		p := policy.Default()
		f(&p.Pacing)
		return p
	}
	shortHangups := withPolicy(func(p *policy.PacingRule) { p.SuspectShortHangups = 4 })
	tests := []struct {
		name  string
		pol   policy.Policy
		atts  []attempt
		want  []int // attempts (1-based) with a suspect report
		block int   // first blocked attempt, 0 none
		sig   string
		score float64 // of the first report
	}{
		{"caller hang-ups 3 s after the answer, reported once a day", shortHangups, repeat(12, amd), []int{5}, 0, "short_hangups", 0.5},
		{"the callee hanging up is no machine's detector", shortHangups,
			repeat(12, attempt{gap: amd.gap, ring: amd.ring, talk: amd.talk, by: dialog.Callee}), nil, 0, "", 0},
		{"hang-ups of unknown sender are not counted", shortHangups,
			repeat(12, attempt{gap: amd.gap, ring: amd.ring, talk: amd.talk}), nil, 0, "", 0},
		{"a longer interval reports again", withPolicy(func(p *policy.PacingRule) {
			p.SuspectShortHangups, p.SuspectIntervalS = 4, 60
		}), repeat(12, amd), []int{5, 7, 9, 11}, 0, "short_hangups", 0.5},
		{"the signal off", policy.Default(), repeat(12, amd), nil, 0, "", 0},
		{"hang-ups at one fixed time: a spike", withPolicy(func(p *policy.PacingRule) { p.SuspectHangupSpike, p.HangupSpike = 5, 8 }),
			repeat(12, attempt{gap: 20 * time.Second, ring: 8 * time.Second, talk: 5010 * time.Millisecond, by: dialog.Caller}),
			[]int{6}, 9, "hangup_spike", 0.63},
		{"invalid numbers", withPolicy(func(p *policy.PacingRule) { p.SuspectInvalidNumbers, p.InvalidNumbers = 6, 12 }),
			repeat(20, attempt{gap: 25 * time.Second, ring: time.Second, status: 404}), []int{7}, 13, "invalid_numbers", 0.5},
		{"no pause in 150 attempts", policy.Default(),
			repeat(160, attempt{gap: 9 * time.Second, ring: 20 * time.Second, status: 480}), []int{150}, 0, "sustained", 0.5},
		{"a pause of a minute starts the run again", policy.Default(),
			append(repeat(100, attempt{gap: 9 * time.Second, ring: 20 * time.Second, status: 480}),
				repeat(100, attempt{gap: 9 * time.Second, ring: 20 * time.Second, status: 480})[1:]...), nil, 0, "", 0},
	}
	// The pause: the first attempt of the second half waits 70 s.
	tests[8].atts[100].gap = 70 * time.Second
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verdicts, viols := dial(t, tt.pol, tt.atts)
			var got []int
			first := 0
			for i, v := range verdicts {
				if v.Block && first == 0 {
					first = i + 1
				}
				if len(v.Observed) > 0 && !v.Block {
					t.Errorf("attempt %d: observed %v; a suspect report names nothing on the call", i+1, v.Observed)
				}
			}
			for _, v := range viols {
				if v.Confidence != rules.Suspect {
					continue
				}
				if v.Action != rules.ActionObserved || v.Rule != policy.Pacing || v.Evidence["signal"] != tt.sig {
					t.Errorf("suspect report %+v, want pacing observed by %s", v, tt.sig)
				}
				if len(got) == 0 && v.Score != tt.score {
					t.Errorf("first suspect report scores %v, want %v", v.Score, tt.score)
				}
				// Find the attempt it was made at by its Call-ID.
				var n int
				fmt.Sscanf(v.CallID, "s%d", &n)
				got = append(got, n+1)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("suspect reports at attempts %v, want %v", got, tt.want)
			}
			if first != tt.block {
				t.Errorf("first block at attempt %d, want %d", first, tt.block)
			}
		})
	}
}

// TestAllowPathAllocatesNothing holds the decision on an allowed outbound
// INVITE and the call's end, with every signal measuring (answered calls
// of every length, ended by either side), to no allocation.
func TestAllowPathAllocatesNothing(t *testing.T) {
	var last rules.Violation
	e := newEngine(t, policy.Default(), rules.Options{OnViolation: func(v rules.Violation) { last = v }})
	const n = 64
	evs := make([]detect.Event, n)
	ids := make([]string, n)
	for k := range evs {
		ids[k] = fmt.Sprintf("a%d", k)
		callee := fmt.Sprintf("+1212%07d", (k*7919+13)%10_000_000)
		evs[k] = detect.Event{Direction: detect.Outbound, Line: line, Remote: callee, Request: invite(ids[k], line, callee, detect.Outbound)}
	}
	at := t0
	i := 0
	next := func() {
		i++
		k := i % n
		at = at.Add(time.Duration(40000+i*i*7919%31000) * time.Millisecond)
		ev := &evs[k]
		ev.At = at
		if v := e.Decide(ev); v.Block {
			t.Fatalf("attempt %d blocked: %+v", i, last)
		}
		by := dialog.Callee
		if i%2 == 0 {
			by = dialog.Caller
		}
		e.CallEnded(dialog.Call{CallID: ids[k], Line: line, Direction: detect.Outbound, StartedAt: at, FinalStatus: 200,
			AnsweredAt: at.Add(5 * time.Second), EndedAt: at.Add(time.Duration(8+i%25) * time.Second), Disposition: dialog.Answered, EndedBy: by})
	}
	for range 100 {
		next()
	}
	if allocs := testing.AllocsPerRun(500, next); allocs != 0 {
		t.Errorf("%v allocations per attempt, want none", allocs)
	}
}
