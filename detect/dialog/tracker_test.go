package dialog

import (
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// step is one event fed to the tracker at a simulated time.
type step func(tr *Tracker)

func begin(id string, s float64) step {
	return func(tr *Tracker) {
		tr.Begin(Call{CallID: id, Line: "+15551230001", Direction: detect.Outbound, Remote: "+15557654321", StartedAt: at(s)})
	}
}
func resp(id string, status int, s float64) step {
	return func(tr *Tracker) { tr.Response(id, status, at(s), 0) }
}
func respSE(id string, status int, s float64, se time.Duration) step {
	return func(tr *Tracker) { tr.Response(id, status, at(s), se) }
}
func bye(id string, s float64) step { return func(tr *Tracker) { tr.Bye(id, at(s)) } }
func beginTagged(id string, s float64, tag string) step {
	return func(tr *Tracker) {
		tr.Begin(Call{CallID: id, Line: "+15551230001", Direction: detect.Outbound, Remote: "+15557654321", StartedAt: at(s), CallerTag: tag})
	}
}
func byeTagged(id string, s float64, tag string) step {
	return func(tr *Tracker) { tr.ByeTagged(id, at(s), tag) }
}
func byeFrom(id string, s float64, from Party) step {
	return func(tr *Tracker) { tr.ByeFrom(id, at(s), from) }
}
func cancel(id string) step             { return func(tr *Tracker) { tr.Cancel(id, t0) } }
func expire(s float64) step             { return func(tr *Tracker) { tr.Expire(at(s)) } }
func refresh(id string, s float64) step { return func(tr *Tracker) { tr.Refresh(id, at(s), 0) } }
func block(id string, s float64) step {
	return func(tr *Tracker) { tr.Block(id, "pacing", 403, at(s)) }
}
func fail(id string, status int, s float64) step {
	return func(tr *Tracker) { tr.Fail(id, status, at(s)) }
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		// want is the one call reported; nil: none.
		want *Call
	}{
		{"answered then BYE", []step{begin("a", 0), resp("a", 180, 1), resp("a", 200, 5), bye("a", 65.5)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(5), EndedAt: at(65.5)}},
		{"answered, the callee hangs up", []step{begin("a", 0), resp("a", 200, 5), byeFrom("a", 9, Callee)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(5), EndedAt: at(9), EndedBy: Callee}},
		{"answered, the caller hangs up", []step{begin("a", 0), resp("a", 200, 5), byeFrom("a", 7.5, Caller)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(5), EndedAt: at(7.5), EndedBy: Caller}},
		{"the BYE's From tag is the caller's", []step{beginTagged("a", 0, "t-caller"), resp("a", 200, 5), byeTagged("a", 8, "t-caller")},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(5), EndedAt: at(8), EndedBy: Caller}},
		{"the BYE's From tag is another", []step{beginTagged("a", 0, "t-caller"), resp("a", 200, 5), byeTagged("a", 8, "t-callee")},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(5), EndedAt: at(8), EndedBy: Callee}},
		{"no tag on the INVITE: the sender is not known", []step{begin("a", 0), resp("a", 200, 5), byeTagged("a", 8, "t-callee")},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(5), EndedAt: at(8)}},
		{"busy", []step{begin("a", 0), resp("a", 486, 1)},
			&Call{Disposition: Busy, FinalStatus: 486, EndedAt: at(1)}},
		{"declined everywhere", []step{begin("a", 0), resp("a", 600, 1)},
			&Call{Disposition: Busy, FinalStatus: 600, EndedAt: at(1)}},
		{"no answer (408)", []step{begin("a", 0), resp("a", 180, 1), resp("a", 408, 32)},
			&Call{Disposition: NoAnswer, FinalStatus: 408, EndedAt: at(32)}},
		{"cancelled while ringing", []step{begin("a", 0), resp("a", 180, 1), cancel("a"), resp("a", 487, 9)},
			&Call{Disposition: Cancelled, FinalStatus: 487, EndedAt: at(9)}},
		{"rejected", []step{begin("a", 0), resp("a", 403, 1)},
			&Call{Disposition: Failed, FinalStatus: 403, EndedAt: at(1)}},
		{"blocked", []step{begin("a", 0), block("a", 0.01)},
			&Call{Disposition: Blocked, FinalStatus: 403, BlockedBy: "pacing", EndedAt: at(0.01)}},
		{"next hop down", []step{begin("a", 0), fail("a", 503, 0.5)},
			&Call{Disposition: Failed, FinalStatus: 503, EndedAt: at(0.5)}},
		{"second fork's error after the answer is ignored", []step{begin("a", 0), resp("a", 200, 2), resp("a", 486, 3), bye("a", 10)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(2), EndedAt: at(10)}},
		{"2xx retransmission keeps the first answer time", []step{begin("a", 0), resp("a", 200, 2), resp("a", 200, 2.5), bye("a", 10)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(2), EndedAt: at(10)}},
		{"longest call ends a call with no BYE", []step{begin("a", 0), resp("a", 200, 1), expire(3600), expire(4*3600 + 2)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(1), EndedAt: at(4*3600 + 1), Expired: true}},
		{"lapsed session timer ends the call at its expiry", []step{begin("a", 0), respSE("a", 200, 1, 90*time.Second), expire(100), expire(124)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(1), EndedAt: at(91), Expired: true}},
		{"refreshed session timer keeps the call", []step{begin("a", 0), respSE("a", 200, 1, 90*time.Second), refresh("a", 60), expire(150), bye("a", 200)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(1), EndedAt: at(200)}},
		{"setup with no final response times out", []step{begin("a", 0), resp("a", 180, 1), expire(301)},
			&Call{Disposition: Failed, FinalStatus: 408, EndedAt: at(301), Expired: true}},
		{"BYE on an early dialog", []step{begin("a", 0), resp("a", 183, 1), bye("a", 4)},
			&Call{Disposition: Cancelled, EndedAt: at(4)}},
		{"events for unknown calls change nothing", []step{resp("x", 200, 1), bye("x", 2), expire(99999)}, nil},
		{"retransmitted INVITE does not start a second call", []step{begin("a", 0), begin("a", 0.5), resp("a", 200, 1), bye("a", 3)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(1), EndedAt: at(3)}},
		{"challenged INVITE and its retry with credentials are one call", []step{begin("a", 0), resp("a", 407, 0.01), begin("a", 0.02), resp("a", 180, 1), resp("a", 200, 5), bye("a", 65)},
			&Call{Disposition: Answered, FinalStatus: 200, AnsweredAt: at(5), EndedAt: at(65)}},
		{"challenged twice (401 then 407) is still one call", []step{begin("a", 0), resp("a", 401, 0.01), begin("a", 0.02), resp("a", 407, 0.03), begin("a", 0.04), resp("a", 486, 1)},
			&Call{Disposition: Busy, FinalStatus: 486, EndedAt: at(1)}},
		{"a challenge nobody answers ends the call at it", []step{begin("a", 0), resp("a", 407, 0.01), expire(30), expire(33)},
			&Call{Disposition: Failed, FinalStatus: 407, EndedAt: at(0.01)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Call
			tr := New(Options{OnEnd: func(c Call) { got = append(got, c) }})
			for _, s := range tt.steps {
				s(tr)
			}
			if tt.want == nil {
				if len(got) != 0 {
					t.Fatalf("reported %+v, want nothing", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("reported %d calls, want 1: %+v", len(got), got)
			}
			c, w := got[0], tt.want
			if c.Disposition != w.Disposition || c.FinalStatus != w.FinalStatus || c.BlockedBy != w.BlockedBy ||
				!c.AnsweredAt.Equal(w.AnsweredAt) || !c.EndedAt.Equal(w.EndedAt) || c.Expired != w.Expired || c.EndedBy != w.EndedBy {
				t.Errorf("got  %s %d %q answered %v ended %v by %q expired %v\nwant %s %d %q answered %v ended %v by %q expired %v",
					c.Disposition, c.FinalStatus, c.BlockedBy, c.AnsweredAt, c.EndedAt, c.EndedBy, c.Expired,
					w.Disposition, w.FinalStatus, w.BlockedBy, w.AnsweredAt, w.EndedAt, w.EndedBy, w.Expired)
			}
			if c.State != Terminated || !c.StartedAt.Equal(t0) || c.Line != "+15551230001" {
				t.Errorf("call = %+v", c)
			}
			if want := w.EndedAt.Sub(w.AnsweredAt); !w.AnsweredAt.IsZero() && c.Duration() != want {
				t.Errorf("duration %v, want %v", c.Duration(), want)
			}
			if st := tr.Stats(); st.Active != 0 || st.Ended != 1 {
				t.Errorf("stats after the end = %+v", st)
			}
		})
	}
}

func TestTrackerBound(t *testing.T) {
	tr := New(Options{MaxCalls: 3})
	for i, id := range []string{"a", "b", "c", "d", "e"} {
		ok := tr.Begin(Call{CallID: id, StartedAt: at(float64(i))})
		if ok != (i < 3) {
			t.Errorf("Begin(%s) = %v", id, ok)
		}
	}
	st := tr.Stats()
	if st.Active != 3 || st.Overflow != 2 || st.Total != 3 {
		t.Errorf("stats = %+v", st)
	}
	if a := tr.Active(); len(a) != 3 || a[0].CallID != "a" || a[2].CallID != "c" {
		t.Errorf("Active() = %+v", a)
	}
}

// BenchmarkTracker is the tracker's share of a call's cost: begin, ring,
// answer, hang up.
func BenchmarkTracker(b *testing.B) {
	tr := New(Options{OnEnd: func(Call) {}})
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "call-" + time.Duration(i).String()
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := ids[i%len(ids)]
		tr.Begin(Call{CallID: id, StartedAt: t0})
		tr.Response(id, 180, t0, 0)
		tr.Response(id, 200, t0, 0)
		tr.Bye(id, t0)
	}
}

// TestSnapshotRestore: calls in progress survive a restart of the tracker
// and end as if it had not happened; the other party is not kept.
func TestSnapshotRestore(t *testing.T) {
	var ended []Call
	a := New(Options{})
	a.Begin(Call{CallID: "up", Line: "+15551230001", Direction: detect.Outbound, Remote: "+15557654321", StartedAt: at(0)})
	a.Response("up", 200, at(2), 90*time.Second)
	a.Begin(Call{CallID: "ringing", Line: "+15551230001", Direction: detect.Inbound, Remote: "+15557654321", StartedAt: at(5)})
	saved := a.Snapshot()
	if len(saved) != 2 {
		t.Fatalf("snapshot of %d calls, want 2", len(saved))
	}
	b := New(Options{OnEnd: func(c Call) { ended = append(ended, c) }})
	if got := b.Restore(saved); len(got) != 2 || got[0].Remote != "" {
		t.Fatalf("restored %+v; want 2 calls without the other party", got)
	}
	if got := b.Restore(saved); len(got) != 0 {
		t.Errorf("restoring twice added %d calls", len(got))
	}
	b.Bye("up", at(62))
	b.Response("ringing", 487, at(20), 0)
	if len(ended) != 2 || ended[0].Duration() != time.Minute || ended[0].Disposition != Answered || ended[1].Disposition != Cancelled {
		t.Errorf("ended %+v; want the answered call at 60 s and the ringing one cancelled (487)", ended)
	}
	// The session timer carried over: a call restored and never refreshed
	// expires by it.
	c := New(Options{})
	c.Restore(saved)
	if n := c.Expire(at(2 + 90 + 33)); n != 1 {
		t.Errorf("expired %d calls past the session timer, want 1 (the answered one)", n)
	}
}

// TestIdle: an empty tracker hands out a channel that its next call
// closes (Begin or Restore); with calls held there is none.
func TestIdle(t *testing.T) {
	tr := New(Options{})
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	ch := tr.Idle()
	if ch == nil || closed(ch) {
		t.Fatal("empty tracker: want an open channel")
	}
	if tr.Idle() != ch {
		t.Error("a second Idle gave another channel")
	}
	tr.Begin(Call{CallID: "a", StartedAt: t0})
	if !closed(ch) {
		t.Error("Begin did not close the idle channel")
	}
	if tr.Idle() != nil {
		t.Error("a call is held: want no channel")
	}
	tr.Fail("a", 503, t0)
	ch = tr.Idle()
	if ch == nil || closed(ch) {
		t.Fatal("empty again: want an open channel")
	}
	tr.Restore([]Saved{{CallID: "b", State: Confirmed, StartedAt: t0, AnsweredAt: t0}})
	if !closed(ch) {
		t.Error("Restore did not close the idle channel")
	}
}
