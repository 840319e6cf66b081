package sipproxy

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestWorkGate: with every slot taken a request waits, counted, and goes
// in when a slot is given back.
func TestWorkGate(t *testing.T) {
	g := newWorkGate(2)
	g.enter()
	g.enter()
	in := make(chan struct{})
	go func() {
		g.enter()
		close(in)
	}()
	waitFor(t, "the third request counted waiting", func() bool { return g.waiting.Load() == 1 })
	select {
	case <-in:
		t.Fatal("a third request went in with both slots taken")
	default:
	}
	g.leave()
	<-in
	if w, top := g.waiting.Load(), g.top.Load(); w != 0 || top != 1 {
		t.Errorf("waiting %d, at most %d; want 0 and 1", w, top)
	}
}

// TestWorkSlotFreedWhileWaiting: a request gives its slot back before it
// waits on the next hop. With one slot, a call left ringing at the edge
// would otherwise hold every other request at the gate, the answers it
// waits for among them. A request inside the gate makes the next one wait,
// which the status counts, and with four times shedWaiting waiting new
// calls are refused as busy (fewer for longer than the grace: TestWindow
// has the window's rules).
func TestWorkSlotFreedWhileWaiting(t *testing.T) {
	hold := make(chan struct{})
	holding := make(chan struct{}, 1)
	r := newRig(t, "udp", func(o *Options, _ *rig) {
		o.workSlots = 1
		o.testHook = func(req *sip.Request) {
			if req.Recipient.User == "+15557654329" {
				holding <- struct{}{}
				<-hold
			}
		}
	})
	ringing := make(chan struct{})
	release := make(chan struct{})
	r.edge.setAnswer(func(s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
		s.Respond(180, "Ringing", nil)
		close(ringing)
		<-release
		s.Respond(486, "Busy Here", nil)
	})
	first, err := r.phone.invite(ctxT(t), line, "+15557654322", "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.WaitAnswer(ctxT(t), sipgo.AnswerOptions{}) }()
	<-ringing
	r.edge.setAnswer(nil)

	second, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	// Through the one slot while the first rings; without the slot given
	// back it would wait until the first call's caller gave up.
	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	if err := second.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("second call while the first rings: %v", err)
	}
	if err := second.Ack(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	mustHangUp(t, second)
	close(release)
	if err := <-done; err == nil {
		t.Error("the first call was answered; the edge said 486")
	}

	// A request held inside the gate: the next one waits at its door.
	held, err := r.phone.invite(ctxT(t), line, "+15557654329", "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	<-holding
	waiting, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a request counted waiting for the slot", func() bool {
		st := r.p.Stats()
		return st.Waiting == 1 && st.WaitingTop >= 1
	})
	// Past four times the bound at once, without the grace a stall gets.
	r.p.work.waiting.Store(4 * shedWaiting)
	if why := r.p.overloaded(0); why != shedBusy {
		t.Errorf("with %d requests waiting: refused for %d, want busy (%d)", 4*shedWaiting, why, shedBusy)
	}
	r.p.work.waiting.Store(1)
	close(hold)
	mustAnswer(t, held)
	mustHangUp(t, held)
	mustAnswer(t, waiting)
	mustHangUp(t, waiting)
	waitFor(t, "no request waiting", func() bool { return r.p.Stats().Waiting == 0 })
}

// TestSendsAtOnce: only UDP to an address keeps a request's slot while it
// is sent; a name is looked up, and a stream may have to connect.
func TestSendsAtOnce(t *testing.T) {
	for _, c := range []struct {
		transport, dest string
		want            bool
	}{
		{"UDP", "192.0.2.10:5060", true},
		{"udp", "[2001:db8::1]:5060", true},
		{"UDP", "[fe80::1%eth0]:5060", true},
		{"UDP", "edge.leadport.example:5060", false},
		{"TCP", "192.0.2.10:5060", false},
		{"TLS", "192.0.2.10:5061", false},
	} {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "192.0.2.10"})
		req.SetTransport(c.transport)
		req.SetDestination(c.dest)
		if got := sendsAtOnce(req); got != c.want {
			t.Errorf("%s to %q: %v, want %v", c.transport, c.dest, got, c.want)
		}
	}
}

// TestWindowCountsRequestsOnTheirWay: new requests admitted and waiting for
// a work slot fill the window before they are parsed into it, so the
// next one is refused as it arrives, before parsing, rather than admitted
// to wait behind them and be refused only once it reaches a slot.
func TestWindowCountsRequestsOnTheirWay(t *testing.T) {
	hold := make(chan struct{})
	holding := make(chan struct{}, 1)
	r := newRig(t, "udp", func(o *Options, _ *rig) {
		o.workSlots = 1
		o.MaxUnanswered = 3
		o.windowGrace = -1
		o.testHook = func(req *sip.Request) {
			if req.Recipient.User == "+15557654329" {
				holding <- struct{}{}
				<-hold
			}
		}
	})
	// The count decays with time; a slow machine must not make room here.
	r.p.transit.decayedAt.Store(math.MaxInt64)

	held, err := r.phone.invite(ctxT(t), line, "+15557654329", "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	<-holding // in the only slot, not yet in the window
	var queued []*sipgo.DialogClientSession
	for range 3 {
		s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, s)
	}
	waitFor(t, "three new requests waiting for the slot", func() bool { return r.p.work.waiting.Load() == 3 })
	if n, st := r.p.unanswered.Load(), r.p.Stats().Unanswered; n != 0 || st != 3 {
		t.Fatalf("in the works %d, the window's count in the status %d; want 0 and the 3 on their way", n, st)
	}

	refused, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	err = refused.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 503 {
		t.Fatalf("a fourth new request with three on their way and a window of three: %v, want 503 at once", err)
	}
	if w := r.p.work.waiting.Load(); w != 3 {
		t.Errorf("%d requests waiting for the slot after the refusal, want 3: it was refused before it got there", w)
	}
	if st := r.p.Stats(); st.Shed["unanswered"] != 1 {
		t.Errorf("shed by reason = %v, want one unanswered", st.Shed)
	}

	r.p.transit.decayedAt.Store(0)
	close(hold)
	mustAnswer(t, held)
	mustHangUp(t, held)
	// Behind the held call, two of them fit the window whatever the next
	// hop has answered by then; the last to reach a slot fits only if it
	// has answered one of those before. Their goroutines reach the gate in
	// any order.
	refusedLate := 0
	for i, s := range queued {
		err := s.WaitAnswer(ctxT(t), sipgo.AnswerOptions{})
		if errors.As(err, &de) && de.Res.StatusCode == 503 {
			if refusedLate++; refusedLate > 1 {
				t.Fatalf("queued call %d refused too: more than one of three on their way refused", i)
			}
			continue
		}
		if err != nil {
			t.Fatalf("queued call %d: %v", i, err)
		}
		if err := s.Ack(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		mustHangUp(t, s)
	}
	waitFor(t, "none on their way", func() bool { return r.p.transit.n.Load() == 0 })
}
