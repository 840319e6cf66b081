package rules_test

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
)

const line = "+15551230001"

var t0 = time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)

func invite(callID, from, to string, dir detect.Direction) *sip.Request {
	ruri := sip.Uri{Scheme: "sip", User: to, Host: "edge.example"}
	req := sip.NewRequest(sip.INVITE, ruri)
	f := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: from, Host: "pbx.example"}, Params: sip.NewParams()}
	f.Params.Add("tag", "x")
	req.AppendHeader(f)
	req.AppendHeader(&sip.ToHeader{Address: ruri, Params: sip.NewParams()})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.SetSource("192.0.2.10:5060")
	return req
}

func newEngine(t testing.TB, p policy.Policy, opts rules.Options) *rules.Engine {
	t.Helper()
	if p.Lines == nil {
		p.Lines = []string{line}
	}
	e, err := rules.New(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// inbound decides an inbound INVITE to the line from caller.
func inbound(e *rules.Engine, id, caller string, at time.Time) detect.Verdict {
	req := invite(id, caller, line, detect.Inbound)
	return e.Decide(&detect.Event{At: at, Direction: detect.Inbound, Line: line, Remote: caller, Request: req})
}

func TestPolicySwapKeepsCallsInProgress(t *testing.T) {
	e := newEngine(t, policy.Default(), rules.Options{})
	if v := inbound(e, "a", "+12125550100", t0); v.Block {
		t.Fatalf("first call blocked: %+v", v)
	}
	p := policy.Default()
	p.Version = 7
	p.Lines = []string{line, "+15551230002"}
	if err := e.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if got := e.Policy().Version; got != 7 {
		t.Errorf("version after swap = %d, want 7", got)
	}
	// The call from before the swap still counts: a second one is busy.
	if v := inbound(e, "b", "+12125550111", t0.Add(time.Second)); !v.Block || v.Status != 486 || v.Rule != policy.TrunkingConcurrent {
		t.Errorf("second call = %+v, want 486 trunking.concurrent", v)
	}
	// A policy without the line drops what was held about it.
	p.Lines = []string{"+15551230002"}
	if err := e.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(); s.Lines != 0 || s.Calls != 0 {
		t.Errorf("after the line left the policy: %d lines, %d calls held; want 0, 0", s.Lines, s.Calls)
	}
}

func TestInvalidPolicyRefused(t *testing.T) {
	bad := policy.Default()
	bad.Pacing.CooldownS = 0
	if _, err := rules.New(bad, rules.Options{}); err == nil {
		t.Fatal("New accepted cooldown_s 0")
	}
	e := newEngine(t, policy.Default(), rules.Options{})
	bad.Lines = []string{line}
	if err := e.SetPolicy(bad); err == nil {
		t.Fatal("SetPolicy accepted cooldown_s 0")
	}
	if got := e.Policy().Pacing.CooldownS; got != 900 {
		t.Errorf("policy after a refused swap has cooldown_s %d, want the old 900", got)
	}
	p := policy.Default()
	p.Lines = []string{"not a number"}
	if err := e.SetPolicy(p); err == nil {
		t.Error("SetPolicy accepted a line that is not a number")
	}
}

func TestRulePanicLetsRequestThrough(t *testing.T) {
	var got []rules.Violation
	var failed []string
	e := newEngine(t, policy.Default(), rules.Options{
		OnViolation: func(v rules.Violation) { got = append(got, v) },
		OnRuleError: func(rule string, err error) { failed = append(failed, rule) },
	})
	rules.PanicIn(e, policy.TrunkingConcurrent)
	if v := inbound(e, "a", "+12125550100", t0); v.Block {
		t.Fatalf("first call blocked: %+v", v)
	}
	// The second call would be refused 486; with the rule failing it
	// passes, and the failure is reported.
	if v := inbound(e, "b", "+12125550111", t0.Add(time.Second)); v.Block {
		t.Errorf("verdict with the rule panicking = %+v, want allow", v)
	}
	if len(got) != 2 || got[0].Rule != policy.RuleError || got[0].Evidence["rule"] != policy.TrunkingConcurrent || got[0].Action != "observed" {
		t.Errorf("violations = %+v, want agent.rule_error naming trunking.concurrent for each call", got)
	}
	if s := e.Stats(); s.RuleErrors[policy.TrunkingConcurrent] != 2 {
		t.Errorf("rule errors = %v, want 2 for trunking.concurrent", s.RuleErrors)
	}
	if len(failed) != 2 {
		t.Errorf("OnRuleError called %d times, want 2", len(failed))
	}
}

// TestConcurrentUse runs decisions and call ends from many goroutines; the
// race detector (make test runs -race) checks the locking, and the counts
// must add up.
func TestConcurrentUse(t *testing.T) {
	p := policy.Default()
	p.Lines = nil
	for i := 0; i < 8; i++ {
		p.Lines = append(p.Lines, fmt.Sprintf("+1555123%04d", i))
	}
	e := newEngine(t, p, rules.Options{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := p.Lines[g]
			for i := 0; i < 200; i++ {
				id := strconv.Itoa(g) + "-" + strconv.Itoa(i)
				at := t0.Add(time.Duration(i) * time.Minute)
				req := invite(id, l, fmt.Sprintf("+1212%07d", i*7919%10_000_000), detect.Outbound)
				e.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: l, Remote: "+12125550100", Request: req})
				c := dialog.Call{CallID: id, Line: l, Direction: detect.Outbound, StartedAt: at, AnsweredAt: at.Add(5 * time.Second), EndedAt: at.Add(40 * time.Second)}
				e.CallAnswered(c)
				e.CallEnded(c)
				_ = e.Stats()
			}
		}()
	}
	wg.Wait()
	s := e.Stats()
	if s.Decisions != 1600 || s.Calls != 0 {
		t.Errorf("decisions %d, calls held %d; want 1600, 0", s.Decisions, s.Calls)
	}
}

// TestSameCallIDOneAttempt: an INVITE seen again with the Call-ID of the
// line's newest attempt (re-sent with credentials after a 407, or a
// retransmission relayed once the proxy's transaction ended) is the same
// attempt; the pacing rule counts it once. Distinct calls at the same pace
// trip it.
func TestSameCallIDOneAttempt(t *testing.T) {
	for _, tt := range []struct {
		name      string
		callID    func(i int) string
		wantBlock bool
	}{
		{"same Call-ID", func(int) string { return "auth-retry" }, false},
		{"distinct calls", func(i int) string { return fmt.Sprintf("c%d", i) }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, policy.Default(), rules.Options{DefaultCountry: "1"})
			blocked := false
			for i := 0; i < 20 && !blocked; i++ {
				at := t0.Add(time.Duration(i) * 2 * time.Second)
				callee := "+15557654321"
				id := tt.callID(i)
				v := e.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: line, Remote: callee, Request: invite(id, line, callee, detect.Outbound)})
				blocked = v.Block
				e.CallEnded(dialog.Call{CallID: id, Line: line, Direction: detect.Outbound, Remote: callee,
					StartedAt: at, EndedAt: at.Add(time.Second), Disposition: dialog.Failed})
			}
			if blocked != tt.wantBlock {
				t.Errorf("blocked = %v after 20 INVITEs 2 s apart, want %v", blocked, tt.wantBlock)
			}
		})
	}
}

// TestPacingCooldown: once pacing trips, the line's next attempts fall in
// its cool-down. Blocking, each is refused with a violation carrying the
// evidence of the trip and the cool-down's end; observing, each goes out
// naming the rule and writes nothing more. Either way the line keeps the
// evidence no longer than it needs it: only while blocking, and only
// until the cool-down is over.
func TestPacingCooldown(t *testing.T) {
	for _, tt := range []struct {
		action       policy.Action
		wantBlock    bool
		wantEvidence bool // kept while cooling
	}{
		{policy.Block, true, true},
		{policy.Observe, false, false},
	} {
		t.Run(string(tt.action), func(t *testing.T) {
			p := policy.Default()
			p.Pacing.Action = tt.action
			var viols []rules.Violation
			e := newEngine(t, p, rules.Options{DefaultCountry: "1", OnViolation: func(v rules.Violation) { viols = append(viols, v) }})
			attempt := func(i int, at time.Time) detect.Verdict {
				id, callee := fmt.Sprintf("c%d", i), fmt.Sprintf("+1555765%04d", i*37)
				v := e.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: line, Remote: callee, Request: invite(id, line, callee, detect.Outbound)})
				e.CallEnded(dialog.Call{CallID: id, Line: line, Direction: detect.Outbound, Remote: callee,
					StartedAt: at, EndedAt: at.Add(time.Second), Disposition: dialog.Failed})
				return v
			}
			at, i := t0, 0
			for ; len(viols) == 0 && i < 40; i++ {
				at = at.Add(2 * time.Second)
				attempt(i, at)
			}
			if len(viols) != 1 || viols[0].Rule != policy.Pacing {
				t.Fatalf("violations after %d attempts 2 s apart: %+v, want one of %s", i, viols, policy.Pacing)
			}
			signal := viols[0].Evidence["signal"]
			if got := rules.CoolEvidenceHeld(e, line); got != tt.wantEvidence {
				t.Errorf("evidence kept while cooling = %v, want %v", got, tt.wantEvidence)
			}

			at = at.Add(2 * time.Second)
			v := attempt(i, at)
			i++
			if v.Block != tt.wantBlock || (!v.Block && !slices.Contains(v.Observed, policy.Pacing)) {
				t.Errorf("attempt in the cool-down: %+v, want blocked %v or pacing observed", v, tt.wantBlock)
			}
			switch {
			case tt.wantBlock && len(viols) != 2:
				t.Fatalf("%d violations after a blocked repeat, want 2", len(viols))
			case tt.wantBlock:
				ev := viols[1].Evidence
				if ev["signal"] != signal || ev["cooldown_until"] == nil {
					t.Errorf("repeat's evidence %v, want signal %v and cooldown_until", ev, signal)
				}
			case len(viols) != 1:
				t.Errorf("an observed repeat wrote %d more violations, want none", len(viols)-1)
			}

			at = at.Add(time.Duration(p.Pacing.CooldownS)*time.Second + time.Minute)
			if v := attempt(i, at); v.Block || slices.Contains(v.Observed, policy.Pacing) {
				t.Errorf("attempt after the cool-down: %+v, want allowed", v)
			}
			if rules.CoolEvidenceHeld(e, line) {
				t.Error("evidence still kept after the cool-down")
			}
		})
	}
}
