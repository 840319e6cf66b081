package replay

import (
	"fmt"
	"strings"
	"testing"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
)

const (
	gLine  = "+15551230001"
	gLine2 = "+15551230002"
)

type goldenCase struct {
	name   string
	trace  Trace
	policy policy.Policy
	// check asserts what the case is about, whatever expected.json says,
	// so that an -update that changed the meaning still fails.
	check func(t *testing.T, res *Result)
}

// blocksAre checks the (kind, index, rule, status) of every block.
func blocksAre(want ...Block) func(*testing.T, *Result) {
	return func(t *testing.T, res *Result) {
		t.Helper()
		if len(res.Blocks) != len(want) {
			t.Fatalf("blocks = %v, want %v", res.Blocks, want)
		}
		for i, w := range want {
			g := res.Blocks[i]
			if g.Kind != w.Kind || g.Index != w.Index || g.Rule != w.Rule || g.Status != w.Status {
				t.Errorf("block %d = %v, want %s #%d %d %s", i, g, w.Kind, w.Index, w.Status, w.Rule)
			}
		}
	}
}

// violationsAre checks the rule and action of every violation; a suspect
// report is "rule/suspect". When want names no suspect report, suspect
// reports are left out: the case is about what is certain.
func violationsAre(want ...string) func(*testing.T, *Result) {
	return func(t *testing.T, res *Result) {
		t.Helper()
		suspects := false
		for _, w := range want {
			suspects = suspects || strings.HasSuffix(w, "/"+TripSuspect)
		}
		var got []string
		for _, v := range res.Violations {
			if v.Confidence == rules.Suspect {
				if suspects {
					got = append(got, v.Rule+"/"+TripSuspect)
				}
				continue
			}
			got = append(got, v.Rule+"/"+string(v.Action))
		}
		if len(got) != len(want) {
			t.Fatalf("violations = %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("violation %d = %s, want %s", i, got[i], want[i])
			}
		}
	}
}

// noSuspect checks that nothing was even suspected.
func noSuspect(t *testing.T, res *Result) {
	t.Helper()
	for _, tr := range res.Trips {
		if tr.Action == TripSuspect {
			t.Errorf("suspect report %+v, want none", tr)
		}
	}
}

// certain is the violations that are not suspect reports.
func certain(res *Result) []rules.Violation {
	var out []rules.Violation
	for _, v := range res.Violations {
		if v.Confidence != rules.Suspect {
			out = append(out, v)
		}
	}
	return out
}

func both(fs ...func(*testing.T, *Result)) func(*testing.T, *Result) {
	return func(t *testing.T, res *Result) {
		t.Helper()
		for _, f := range fs {
			f(t, res)
		}
	}
}

func out(start float64, remote string, ring, talk float64) Call {
	status := 200
	if talk == 0 {
		status = 487
	}
	return Call{Start: sec(start), Direction: detect.Outbound, Line: gLine, Remote: remote, Ring: sec(ring), Status: status, Talk: sec(talk)}
}

func in(start float64, caller string, ring, talk float64) Call {
	return Call{Start: sec(start), Direction: detect.Inbound, Line: gLine, Remote: caller, Ring: sec(ring), Status: 200, Talk: sec(talk)}
}

func withPolicy(f func(p *policy.Policy)) policy.Policy {
	p := policy.Default()
	f(&p)
	return p
}

func goldenCases() []goldenCase {
	def := policy.Default()
	lines := []string{gLine, gLine2}
	tr := func(class Class, rule string, calls ...Call) Trace {
		return Trace{Model: "golden", Class: class, Lines: lines, Calls: calls, Rule: rule}
	}
	redirect302 := in(0, "+12125550100", 4, 0)
	redirect302.Status = 302
	early181 := in(0, "+12125550100", 8, 60)
	early181.Early, early181.EarlyDiversion = 181, true
	diverted := out(0, "+13125550199", 5, 60)
	diverted.Line, diverted.From, diverted.Diversion = "", "+12125550100", []string{gLine}
	history := out(0, "+13125550199", 5, 60)
	history.Line, history.From = "", "+12125550100"
	history.HistoryInfo = []string{"<sip:" + gLine + "@pbx.example;cause=302>;index=1", "<sip:+13125550199@edge.example>;index=1.1"}
	referred := in(0, "+12125550100", 5, 120)
	referred.ReferAfter = sec(30)
	featureCode := out(0, "*72+13125550199", 2, 5)
	lateFeatureCode := featureCode
	lateFeatureCode.Start = sec(200)
	presenting := out(6, "+13125550199", 5, 60)
	presenting.Line, presenting.From = "", "+12125550100"
	paiMismatch := out(0, "+13125550199", 5, 60)
	paiMismatch.PAI = "+18005550000"
	anonymousFrom := out(0, "+13125550199", 5, 60)
	anonymousFrom.From, anonymousFrom.PAI = "anonymous", gLine
	extensionFrom := out(100, "+13125550199", 5, 60)
	extensionFrom.From, extensionFrom.PAI = "201", gLine
	fromPhone := out(120, "+13125550199", 5, 60)
	fromPhone.Line, fromPhone.From, fromPhone.Source = "", "+18005550000", "192.0.2.50:5062"

	var progressive, perMinute, regular, sequential []Call
	for i := 0; i < 8; i++ {
		// A call every 20.5 s, next one 0.5 s after the last ends.
		progressive = append(progressive, out(float64(i)*20.5, numberN(i*7919), 5, 15))
		// Short unanswered attempts, 6 to 9 s apart.
		// Every 45 s exactly, ring and talk varying so gaps are long.
		regular = append(regular, out(float64(i)*45, numberN(i*7919), 10, float64(5+i*3)))
		// Consecutive numbers at a person's pace.
		sequential = append(sequential, out(float64(i)*97+float64(i*i*3), numberN(1000+i), 20+float64(i)*1.7, 0))
	}
	for i, at := range []float64{0, 7, 16, 22, 31, 38, 47, 53} {
		perMinute = append(perMinute, out(at, numberN(i*7919), 3+float64(i)*0.3, 0))
	}
	parallel := []Call{out(0, "+13125550101", 20, 0), out(1, "+13125550102", 20, 0), out(2, "+13125550103", 20, 0)}
	cooldown := append(append([]Call{}, progressive[:4]...), out(20.5*3+960, "+14155550111", 5, 30))
	// Rings given up at one exact time: a dialer's no-answer timeout.
	var timeout []Call
	for i, at := range []float64{0, 31, 70, 96, 140, 177} {
		timeout = append(timeout, out(at, numberN(i*7919), 25, 0))
	}
	// A dialer's timer: a new attempt on a 12 s tick, skipping the ticks
	// while the line is busy.
	var ticks []Call
	for i, at := range []float64{0, 24.01, 36.03, 60.02, 84, 96.02, 120.01} {
		ticks = append(ticks, out(at, numberN(i*7919), 4+float64(i)*1.3, 0))
	}
	human := []Call{
		out(0, "+13125550101", 18, 0), out(62, "+17185550102", 6, 240), out(390, "+13125550101", 8, 95),
		out(560, "+16465550199", 25, 0), out(640, "+12025550177", 4, 31),
	}
	// After-call work: ten unanswered attempts at a dialer's pace (so the
	// line is busy enough to be measured), then conversations of two
	// minutes, each followed by the next attempt 3 s later.
	var acw []Call
	at := 0.0
	for i := range 10 {
		ring := 18 + float64(i)*0.37
		acw = append(acw, out(at, numberN(i*7919+1), ring, 0))
		at += ring + 4 + float64(i%3)
	}
	for i := range 6 {
		talk := 120 + float64(i)*7
		acw = append(acw, out(at, numberN(i*7919+500), 6, talk))
		at += 6 + talk + 3
	}
	// A number block walked in steps of 3 at a person's pace.
	var wide []Call
	at = 0
	for i := range 21 {
		ring := 20 + float64(i)*0.9
		wide = append(wide, out(at, numberN(1000+3*i), ring, 0))
		at += ring + 25 + float64(i%4)*6
	}
	// Answered calls hung up 3 s after the answer: by the caller, as a
	// dialer's answering-machine detection does, or by the callee.
	var amdCaller, amdCallee []Call
	at = 0
	for i := range 7 {
		c := out(at, numberN(i*7919+3), 8+float64(i)*0.5, 3+float64(i)*0.1)
		amdCaller = append(amdCaller, c)
		c.Bye = ByeCallee
		amdCallee = append(amdCallee, c)
		at += 8 + float64(i)*0.5 + 3 + 20
	}
	shortHangups := withPolicy(func(p *policy.Policy) { p.Pacing.SuspectShortHangups = 5 })
	quota := []Call{out(0, "+13125550101", 5, 400), out(500, "+16465550177", 5, 400), out(1000, "+17185550123", 5, 60), out(1200, "+12025550144", 5, 60)}

	return []goldenCase{
		{name: "forwarding_redirect_302", trace: tr(Forwarding, policy.ForwardingRedirect, redirect302), policy: def,
			check: blocksAre(Block{Kind: "response", Index: 0, Rule: policy.ForwardingRedirect, Status: 403})},
		{name: "forwarding_redirect_181_diversion", trace: tr(Forwarding, policy.ForwardingRedirect, early181), policy: def,
			check: blocksAre(Block{Kind: "response", Index: 0, Rule: policy.ForwardingRedirect, Status: 403})},
		{name: "forwarding_redirect_observed", trace: tr(Forwarding, policy.ForwardingRedirect, redirect302),
			policy: withPolicy(func(p *policy.Policy) { p.Forwarding.Actions["redirect"] = policy.Observe }),
			check:  both(blocksAre(), violationsAre("forwarding.redirect/observed"))},
		{name: "forwarding_diversion", trace: tr(Forwarding, policy.ForwardingDiversion, diverted), policy: def,
			check: blocksAre(Block{Kind: "invite", Index: 0, Rule: policy.ForwardingDiversion, Status: 403})},
		{name: "forwarding_history_info", trace: tr(Forwarding, policy.ForwardingDiversion, history), policy: def,
			check: blocksAre(Block{Kind: "invite", Index: 0, Rule: policy.ForwardingDiversion, Status: 403})},
		{name: "forwarding_refer", trace: tr(Forwarding, policy.ForwardingRefer, referred), policy: def,
			check: blocksAre(Block{Kind: "refer", Index: 0, Rule: policy.ForwardingRefer, Status: 403})},
		{name: "forwarding_feature_code", trace: tr(Forwarding, policy.ForwardingFeatureCode, featureCode), policy: def,
			check: blocksAre(Block{Kind: "invite", Index: 0, Rule: policy.ForwardingFeatureCode, Status: 403})},
		{name: "forwarding_bridge_same_line", trace: tr(Forwarding, policy.ForwardingBridge, in(0, "+12125550100", 3, 300), out(8, "+13125550199", 5, 60)), policy: def,
			check: both(blocksAre(Block{Kind: "invite", Index: 1, Rule: policy.ForwardingBridge, Status: 403}),
				violationsAre("forwarding.bridge/blocked", "trunking.concurrent/blocked"))},
		{name: "forwarding_bridge_caller_presented", trace: tr(Forwarding, policy.ForwardingBridge, in(0, "+12125550100", 20, 300), presenting), policy: def,
			check: blocksAre(Block{Kind: "invite", Index: 1, Rule: policy.ForwardingBridge, Status: 403})},
		{name: "trunking_concurrent", trace: tr(Trunking, policy.TrunkingConcurrent, in(0, "+12125550100", 3, 300), in(40, "+12125550111", 3, 60)), policy: def,
			check: blocksAre(Block{Kind: "invite", Index: 1, Rule: policy.TrunkingConcurrent, Status: 486})},
		{name: "trunking_concurrent_allowed_two", trace: tr(Human, "", in(0, "+12125550100", 3, 300), in(40, "+12125550111", 3, 60), in(50, "+12125550122", 3, 60)),
			policy: withPolicy(func(p *policy.Policy) { p.Trunking.MaxDialogsPerLine = 2 }),
			check:  blocksAre(Block{Kind: "invite", Index: 2, Rule: policy.TrunkingConcurrent, Status: 486})},
		{name: "trunking_registrations", trace: Trace{Model: "golden", Class: Trunking, Lines: lines, Rule: policy.TrunkingRegistrations, Registers: []Register{
			{At: 0, Line: gLine, Contact: "sip:" + gLine + "@192.0.2.50:5062", Expires: 3600, Source: "192.0.2.50:5062"},
			{At: sec(600), Line: gLine, Contact: "sip:" + gLine + "@192.0.2.50:5062", Expires: 3600, Source: "192.0.2.50:5062"},
			{At: sec(900), Line: gLine, Contact: "sip:" + gLine + "@192.0.2.51:5060", Expires: 3600, Source: "192.0.2.51:5060"},
			{At: sec(4300), Line: gLine, Contact: "sip:" + gLine + "@192.0.2.51:5060", Expires: 3600, Source: "192.0.2.51:5060"},
		}}, policy: def,
			// The second phone is refused while the first's binding lives,
			// and accepted once it lapsed.
			check: blocksAre(Block{Kind: "register", Index: 2, Rule: policy.TrunkingRegistrations, Status: 403})},
		{name: "pacing_gap_after_call", trace: tr(Machine, policy.Pacing, progressive...), policy: def,
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Rule != policy.Pacing || b.Attempt != 3 || certain(res)[0].Evidence["signal"] != "gap_after_call" {
					t.Errorf("first block %v, violations %v; want pacing by gap_after_call at attempt 3", b, res.Violations)
				}
			}},
		{name: "pacing_per_minute", trace: tr(Machine, policy.Pacing, perMinute...),
			policy: withPolicy(func(p *policy.Policy) { p.Pacing.MaxAttemptsPerMinute = 6 }),
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Attempt != 7 || certain(res)[0].Evidence["signal"] != "per_minute" {
					t.Errorf("first block %v, violations %v; want pacing by per_minute at attempt 7", b, res.Violations)
				}
			}},
		{name: "pacing_parallel", trace: tr(Machine, policy.Pacing, parallel...), policy: def,
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Attempt != 2 || b.Rule != policy.TrunkingConcurrent || certain(res)[1].Evidence["signal"] != "parallel" {
					t.Errorf("first block %v, violations %v; want the 2nd attempt refused 486 and pacing tripped by parallel", b, res.Violations)
				}
			}},
		{name: "pacing_regular_intervals", trace: tr(Machine, policy.Pacing, regular...), policy: def,
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Rule != policy.Pacing || certain(res)[0].Evidence["signal"] != "regular_intervals" {
					t.Errorf("first block %v, violations %v; want pacing by regular_intervals", b, res.Violations)
				}
			}},
		{name: "pacing_sequential", trace: tr(Machine, policy.Pacing, sequential...), policy: def,
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Attempt != 5 || certain(res)[0].Evidence["signal"] != "sequential_numbers" || len(certain(res)[0].Numbers) != 5 {
					t.Errorf("first block %v, violations %v; want pacing by sequential_numbers at attempt 5 naming 5 numbers", b, res.Violations)
				}
			}},
		{name: "pacing_fixed_ring_timeout", trace: tr(Machine, policy.Pacing, timeout...), policy: def,
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Attempt != 6 || certain(res)[0].Evidence["signal"] != "fixed_ring_timeout" {
					t.Errorf("first block %v, violations %v; want pacing by fixed_ring_timeout at attempt 6", b, res.Violations)
				}
			}},
		{name: "pacing_timer_ticks", trace: tr(Machine, policy.Pacing, ticks...), policy: def,
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Attempt != 7 || certain(res)[0].Evidence["signal"] != "timer_ticks" {
					t.Errorf("first block %v, violations %v; want pacing by timer_ticks at attempt 7", b, res.Violations)
				}
			}},
		{name: "pacing_after_call_work", trace: tr(Machine, policy.Pacing, acw...), policy: def,
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Attempt != 15 || certain(res)[0].Evidence["signal"] != "after_call_work" {
					t.Errorf("first block %v, violations %v; want pacing by after_call_work at attempt 15", b, res.Violations)
				}
				if tr := res.Trips[0]; tr.Action != TripSuspect || tr.Attempt != 13 || res.Violations[0].Evidence["signal"] != "after_call_work" {
					t.Errorf("first trip %+v (%v); want a suspect report by after_call_work at attempt 13", tr, res.Violations[0])
				}
			}},
		{name: "pacing_sequential_wide", trace: tr(Machine, policy.Pacing, wide...), policy: def,
			check: func(t *testing.T, res *Result) {
				b, ok := res.First()
				if !ok || b.Attempt != 20 || certain(res)[0].Evidence["signal"] != "sequential_wide" {
					t.Errorf("first block %v, violations %v; want pacing by sequential_wide at attempt 20", b, res.Violations)
				}
				if tr := res.Trips[0]; tr.Action != TripSuspect || tr.Attempt != 10 || res.Violations[0].Score != 0.5 {
					t.Errorf("first trip %+v (%v); want a suspect report at attempt 10 scoring 0.5", tr, res.Violations[0])
				}
			}},
		{name: "pacing_short_hangups_by_caller", trace: tr(Machine, policy.Pacing, amdCaller...), policy: shortHangups,
			check: func(t *testing.T, res *Result) {
				violationsAre("pacing/suspect")(t, res)
				if tr := res.Trips[0]; tr.Attempt != 6 || res.Violations[0].Evidence["signal"] != "short_hangups" {
					t.Errorf("trip %+v (%v); want a suspect report by short_hangups at attempt 6", tr, res.Violations[0])
				}
			}},
		{name: "pacing_short_hangups_by_callee", trace: tr(Human, "", amdCallee...), policy: shortHangups,
			check: both(blocksAre(), violationsAre(), noSuspect)},
		{name: "pacing_cooldown_ends", trace: tr(Machine, policy.Pacing, cooldown...), policy: def,
			check: func(t *testing.T, res *Result) {
				if len(res.Blocks) != 2 || res.Blocks[1].Index != 3 {
					t.Errorf("blocks %v; want attempts 3 and 4 refused, the one after the cool-down let through", res.Blocks)
				}
			}},
		{name: "pacing_observed_once", trace: tr(Machine, policy.Pacing, progressive...),
			policy: withPolicy(func(p *policy.Policy) { p.Pacing.Action = policy.Observe }),
			check:  both(blocksAre(), violationsAre("pacing/observed"))},
		{name: "callerid_pai_mismatch", trace: tr(Human, policy.CallerIDMismatch, paiMismatch), policy: def,
			check: blocksAre(Block{Kind: "invite", Index: 0, Rule: policy.CallerIDMismatch, Status: 403})},
		{name: "callerid_withheld_and_extension_allowed", trace: tr(Human, "", anonymousFrom, extensionFrom), policy: def,
			check: both(blocksAre(), violationsAre())},
		{name: "callerid_registered_phone", trace: Trace{Model: "golden", Class: Human, Lines: lines, Rule: policy.CallerIDMismatch,
			Registers: []Register{{At: 0, Line: gLine, Contact: "sip:" + gLine + "@192.0.2.50:5062", Expires: 3600, Source: "192.0.2.50:5062"}},
			Calls:     []Call{fromPhone}}, policy: def,
			check: blocksAre(Block{Kind: "invite", Index: 0, Rule: policy.CallerIDMismatch, Status: 403})},
		{name: "quota_observed", trace: tr(Human, policy.QuotaMinutes, quota...),
			policy: withPolicy(func(p *policy.Policy) { p.Quota.MonthlyMinutes = 12 }),
			check:  both(blocksAre(), violationsAre("quota.minutes/observed"))},
		{name: "quota_blocked", trace: tr(Human, policy.QuotaMinutes, quota...),
			policy: withPolicy(func(p *policy.Policy) { p.Quota.MonthlyMinutes = 12; p.Quota.Action = policy.Block }),
			check: blocksAre(Block{Kind: "invite", Index: 2, Rule: policy.QuotaMinutes, Status: 403},
				Block{Kind: "invite", Index: 3, Rule: policy.QuotaMinutes, Status: 403})},
		{name: "honest_person", trace: tr(Human, "", human...), policy: def,
			check: both(blocksAre(), violationsAre(), noSuspect)},
		{name: "rules_off", trace: tr(Machine, "", append(append([]Call{}, progressive...), lateFeatureCode)...),
			policy: withPolicy(func(p *policy.Policy) { p.Pacing.Action = policy.Off; p.Forwarding.Action = policy.Off }),
			check:  both(blocksAre(), violationsAre())},
	}
}

// numberN is a distinct callee for each n, not sequential for distinct n
// far apart.
func numberN(n int) string { return fmt.Sprintf("+1312555%04d", n%10000) }
