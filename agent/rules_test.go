package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

func rulesAgent(t *testing.T, st *store.Store) *Agent {
	t.Helper()
	cfg := config.Default()
	cfg.Lines = []string{"+15551230001"}
	cfg.Policy.Quota.MonthlyMinutes = 100
	return &Agent{cfg: cfg, log: quiet, store: st}
}

func inboundInvite(id string) *sip.Request {
	return testInvite(id, "+12125550100", "edge.example", "+15551230001", "pbx.example", "a")
}

// testInvite is an initial INVITE from user@fromHost to user@toHost.
func testInvite(id, from, fromHost, to, toHost, fromTag string, extra ...sip.Header) *sip.Request {
	ruri := sip.Uri{Scheme: "sip", User: to, Host: toHost}
	req := sip.NewRequest(sip.INVITE, ruri)
	f := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: from, Host: fromHost}, Params: sip.NewParams()}
	f.Params.Add("tag", fromTag)
	req.AppendHeader(f)
	req.AppendHeader(&sip.ToHeader{Address: ruri, Params: sip.NewParams()})
	cid := sip.CallIDHeader(id)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	for _, h := range extra {
		req.AppendHeader(h)
	}
	return req
}

// TestViolationRecords: a rule's violation reaches the store as a record
// with its evidence as JSON and the other party sealed as personal data.
func TestViolationRecords(t *testing.T) {
	db := storetest.Open(t)
	a := rulesAgent(t, db.Store)
	sink := newRecordSink(db.Store, quiet)
	ctx, stop := context.WithCancel(context.Background())
	go sink.run(ctx)
	engine, err := a.newRules(sink)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for i, id := range []string{"first", "second"} {
		ev := &detect.Event{At: at.Add(time.Duration(i) * time.Second), Direction: detect.Inbound, Line: "+15551230001",
			Remote: "+12125550100", Request: inboundInvite(id)}
		if v := engine.Decide(ev); v.Block != (i == 1) {
			t.Fatalf("call %d: verdict %+v", i, v)
		}
	}
	stop()
	sink.wait(5 * time.Second)
	recs, err := db.Pending(store.TypeViolation, store.ReadOptions{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d violation records, want 1", len(recs))
	}
	p, err := recs[0].Decode()
	if err != nil {
		t.Fatal(err)
	}
	v := p.(*store.Violation)
	var ev map[string]any
	if err := json.Unmarshal(v.Evidence, &ev); err != nil {
		t.Fatalf("evidence %s: %v", v.Evidence, err)
	}
	if v.Rule != "trunking.concurrent" || v.Action != "blocked" || v.CallID != "second" || ev["dialogs"] != 2.0 {
		t.Errorf("violation = %+v, evidence %v; want trunking.concurrent blocked for call second with 2 dialogs", v, ev)
	}
	if len(recs[0].Personal) != 0 {
		t.Errorf("violation has %d personal fields, want none (no number concerned)", len(recs[0].Personal))
	}
}

// TestPolicyUsageSurvivesRestart: minutes counted toward the monthly quota
// are saved and given back to the next engine.
func TestPolicyUsageSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir)
	a := rulesAgent(t, db.Store)
	sink := newRecordSink(db.Store, quiet)
	engine, err := a.newRules(sink)
	if err != nil {
		t.Fatal(err)
	}
	c := call(0)
	c.EndedAt = c.AnsweredAt.Add(30 * time.Minute)
	engine.CallEnded(c)
	a.savePolicyUsage()

	b := rulesAgent(t, db.Store)
	again, err := b.newRules(newRecordSink(db.Store, quiet))
	if err != nil {
		t.Fatal(err)
	}
	b.restorePolicyUsage()
	got := again.QuotaUsage()
	if len(got) != 1 || got[0].Line != "+15551230001" || got[0].Seconds != 1800 {
		t.Errorf("restored usage = %+v, want 1800 s on +15551230001", got)
	}
}

// TestApplyPolicy: a new policy takes effect for new requests, keeps the
// calls in progress, and is kept in the store; an invalid one changes
// nothing.
func TestApplyPolicy(t *testing.T) {
	db := storetest.Open(t)
	a := rulesAgent(t, db.Store)
	engine, err := a.newRules(newRecordSink(db.Store, quiet))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	first := &detect.Event{At: at, Direction: detect.Inbound, Line: "+15551230001", Remote: "+12125550100", Request: inboundInvite("first")}
	if v := engine.Decide(first); v.Block {
		t.Fatalf("first call blocked: %+v", v)
	}
	p := policy.Default()
	p.Version = 4
	p.Trunking.Actions["concurrent"] = policy.Observe
	if err := a.ApplyPolicy(p); err != nil {
		t.Fatal(err)
	}
	second := &detect.Event{At: at.Add(time.Second), Direction: detect.Inbound, Line: "+15551230001", Remote: "+12125550111", Request: inboundInvite("second")}
	if v := engine.Decide(second); v.Block {
		t.Errorf("second call under the new policy (concurrent observed) = %+v, want allowed", v)
	}
	if got := engine.Stats().Calls; got != 2 {
		t.Errorf("%d calls held after the swap, want 2 (the first one kept)", got)
	}
	if v, doc, err := db.Policy(); err != nil || v != 4 || !strings.Contains(string(doc), `"concurrent":"observe"`) {
		t.Errorf("saved policy = %d %s %v, want version 4 with the override", v, doc, err)
	}
	bad := policy.Default()
	bad.Version = 5
	bad.Pacing.CooldownS = 0
	if err := a.ApplyPolicy(bad); err == nil {
		t.Error("an invalid policy was applied")
	}
	if v := engine.Policy().Version; v != 4 {
		t.Errorf("version in force after the invalid one = %d, want 4", v)
	}
	// After a restart the saved policy outranks the config's.
	b := rulesAgent(t, db.Store)
	again, err := b.newRules(newRecordSink(db.Store, quiet))
	if err != nil {
		t.Fatal(err)
	}
	if p := again.Policy(); p.Version != 4 || p.ActionOf(policy.TrunkingConcurrent) != policy.Observe {
		t.Errorf("policy after a restart: version %d, concurrent %s; want 4, observe", p.Version, p.ActionOf(policy.TrunkingConcurrent))
	}
}

// TestStaleCallsMeteredAtShutdown: calls checkpointed long ago are not
// resumed (their BYEs are long gone) but metered as ended then, and the
// record that meters a call takes it out of the checkpoint.
func TestStaleCallsMeteredAtShutdown(t *testing.T) {
	db := storetest.Open(t)
	stopped := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	doc, _ := json.Marshal(dialog.Saved{CallID: "up", Line: "+15551230001", Direction: detect.Outbound, State: dialog.Confirmed,
		StartedAt: stopped.Add(-2 * time.Minute), AnsweredAt: stopped.Add(-100 * time.Second)})
	if err := db.SaveCallsInProgress(stopped, map[string][]byte{"up": doc}); err != nil {
		t.Fatal(err)
	}
	a := rulesAgent(t, db.Store)
	sink := newRecordSink(db.Store, quiet)
	ctx, stop := context.WithCancel(context.Background())
	go sink.run(ctx)
	if _, err := a.newRules(sink); err != nil {
		t.Fatal(err)
	}
	a.tracker = dialog.New(dialog.Options{})
	a.resumeCalls(sink)
	stop()
	sink.wait(5 * time.Second)
	if n := a.tracker.Stats().Active; n != 0 {
		t.Errorf("%d stale calls resumed, want 0", n)
	}
	recs, err := db.Pending(store.TypeUsage, store.ReadOptions{})
	if err != nil || len(recs) != 1 {
		t.Fatalf("%d usage records (%v), want 1", len(recs), err)
	}
	p, _ := recs[0].Decode()
	u := p.(*store.Usage)
	if !u.EndedAt.Equal(stopped) || u.DurationS != 100 || u.Disposition != "answered" || u.CallID != "up" {
		t.Errorf("usage %+v; want call up, answered, ended at the checkpoint, 100 s", u)
	}
	if cp, err := db.CallsInProgress(); err != nil || len(cp.Calls) != 0 {
		t.Errorf("checkpoint after the call was metered: %v, %v; want no calls", cp.Calls, err)
	}
}

// TestRecentViolations: the newest 200, newest first, numbers masked.
func TestRecentViolations(t *testing.T) {
	r := &recentViolations{max: 200}
	for i := 0; i < 450; i++ {
		r.add(rules.Violation{Rule: fmt.Sprint(i), Numbers: []string{"+12125550100"}})
	}
	got := r.last(1000)
	if len(got) != 200 || got[0].Rule != "449" || got[199].Rule != "250" {
		t.Fatalf("last(1000): %d, first %q, last %q; want the 200 newest, newest first", len(got), got[0].Rule, got[len(got)-1].Rule)
	}
	if got[0].Numbers[0] != "+1212***0100" {
		t.Errorf("number %q, want it masked", got[0].Numbers[0])
	}
	if n := len(r.last(3)); n != 3 {
		t.Errorf("last(3) gave %d", n)
	}
}
