package sipproxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

func TestPeekRequest(t *testing.T) {
	tests := []struct {
		name, msg   string
		method, tag string
		ok          bool
	}{
		{"initial INVITE", "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\n\r\n", "INVITE", "", true},
		{"in-dialog BYE", "BYE sip:a@b SIP/2.0\r\nTo: <sip:a@b>;tag=xy\r\n\r\n", "BYE", "xy", true},
		{"compact To, spaces", "INVITE sip:a@b SIP/2.0\r\nt : sip:a@b ; TAG = 9 \r\n\r\n", "INVITE", "9", true},
		{"tag-like user in the URI", "INVITE sip:a@b SIP/2.0\r\nTo: <sip:tag=1@b>\r\n\r\n", "INVITE", "", true},
		{"URI parameter inside brackets", "INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b;tag=1>\r\n\r\n", "INVITE", "", true},
		{"To in the body only", "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 14\r\n\r\nTo: x;tag=y\r\n", "MESSAGE", "", true},
		{"ACK of a refusal", "ACK sip:a@b SIP/2.0\r\nTo: <sip:a@b>;tag=lp-overload-1\r\n\r\n", "ACK", "lp-overload-1", true},
		{"response", "SIP/2.0 200 OK\r\nTo: <sip:a@b>;tag=1\r\n\r\n", "", "", false},
		{"no request line", "\r\n\r\n", "", "", false},
		{"method too long", strings.Repeat("X", 40) + " sip:a SIP/2.0\r\n\r\n", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, tag, ok := peekRequest([]byte(tt.msg))
			if ok != tt.ok || string(m) != tt.method || string(tag) != tt.tag {
				t.Errorf("peekRequest = %q, %q, %v; want %q, %q, %v", m, tag, ok, tt.method, tt.tag, tt.ok)
			}
		})
	}
}

func TestRefusal(t *testing.T) {
	req := "INVITE sip:+15557654321@edge SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-2\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:+15551230001@pbx>;tag=abc\r\n" +
		"To: <sip:+15557654321@edge>\r\n" +
		"Call-ID: c1@pbx\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:+15551230001@10.0.0.1>\r\n" +
		"Content-Type: application/sdp\r\n" +
		"Content-Length: 4\r\n\r\nv=0\n"
	out := refusal(nil, []byte(req), shedQueue)
	msg, err := sip.NewParser().ParseSIP(out)
	if err != nil {
		t.Fatalf("refusal does not parse: %v\n%s", err, out)
	}
	res, ok := msg.(*sip.Response)
	if !ok || res.StatusCode != 503 {
		t.Fatalf("refusal = %s", out)
	}
	if h := res.GetHeader("Retry-After"); h == nil || h.Value() != retryAfter {
		t.Errorf("Retry-After = %v", h)
	}
	if tag, _ := res.To().Params.Get("tag"); !strings.HasPrefix(tag, shedTag) {
		t.Errorf("To tag = %q, want one of the agent's refusals", tag)
	}
	if vias := res.GetHeaders("Via"); len(vias) != 2 {
		t.Errorf("%d Via headers, want both of the request's", len(vias))
	}
	if res.CallID().Value() != "c1@pbx" || res.CSeq().SeqNo != 1 || res.From().Params.GetOr("tag", "") != "abc" {
		t.Errorf("refusal does not match its request:\n%s", out)
	}
	if bytes.Contains(out, []byte("Contact")) || bytes.Contains(out, []byte("v=0")) {
		t.Errorf("refusal carries more than it needs:\n%s", out)
	}
	if w := res.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), "overload: queue") {
		t.Errorf("Warning = %v, want the reason", w)
	}
	if refusal(nil, []byte("INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n"), shedBusy) != nil {
		t.Error("a request without Via got a refusal nobody can match")
	}
}

func FuzzPeekRequest(f *testing.F) {
	f.Add([]byte("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\n\r\n"))
	f.Add([]byte("ACK sip:a@b SIP/2.0\r\nt: <sip:a@b>;tag=lp-overload-1\r\n\r\n"))
	f.Add([]byte("SIP/2.0 100 Trying\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, tag, ok := peekRequest(data)
		if !ok && (m != nil || tag != nil) {
			t.Fatal("not a request, yet a method or tag")
		}
		out := refusal(nil, data, shedMemory)
		if out != nil && (!bytes.HasPrefix(out, []byte("SIP/2.0 503 ")) || !bytes.HasSuffix(out, []byte("\r\n\r\n"))) {
			t.Fatalf("refusal is not a whole 503: %q", out)
		}
	})
}

// TestOverloadKeepsCallsInProgress: while the proxy refuses new calls
// (its memory budget is shrunk below what it holds), the calls it took on
// before still get their re-INVITE, CANCEL and BYE through, over UDP
// (judged before parsing) and TCP (judged after). Once the pressure is
// gone new calls pass again.
func TestOverloadKeepsCallsInProgress(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			r := newRig(t, transport, nil)
			answered, err := r.phone.invite(ctxT(t), line, callee, transport, r.port(transport))
			if err != nil {
				t.Fatal(err)
			}
			mustAnswer(t, answered)

			ringing := make(chan struct{})
			cancelled := make(chan struct{})
			r.edge.setAnswer(func(s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
				s.Respond(180, "Ringing", nil)
				close(ringing)
				<-tx.Done()
				if errors.Is(tx.Err(), sip.ErrTransactionCanceled) {
					close(cancelled)
				}
			})
			pending, err := r.phone.invite(ctxT(t), line, "+15557654322", transport, r.port(transport))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(ctxT(t))
			waited := make(chan error, 1)
			go func() {
				waited <- pending.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error { return nil }})
			}()
			<-ringing
			r.edge.setAnswer(nil)

			// Overloaded: the live heap is always more than half of a byte
			// (once a collection has measured it).
			runtime.GC()
			r.p.admit.budget.Store(1)
			r.p.admit.sampledAt.Store(0)
			refused, err := r.phone.invite(ctxT(t), line, "+15557654323", transport, r.port(transport))
			if err != nil {
				t.Fatal(err)
			}
			err = refused.WaitAnswer(ctxT(t), sipgo.AnswerOptions{})
			var de *sipgo.ErrDialogResponse
			if !errors.As(err, &de) || de.Res.StatusCode != 503 || de.Res.GetHeader("Retry-After") == nil {
				t.Fatalf("new call while overloaded: %v, want 503 with Retry-After", err)
			}
			if st := r.p.Stats(); st.Shed["memory"] == 0 {
				t.Errorf("shed by reason = %v, want memory counted", st.Shed)
			}

			reinvite := sip.NewRequest(sip.INVITE, answered.InviteResponse.Contact().Address)
			reinvite.SetBody([]byte(testSDP))
			reinvite.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res, err := answered.Do(ctxT(t), reinvite)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("re-INVITE while overloaded: %v %v", res, err)
			}
			cancel() // sipgo sends the CANCEL
			select {
			case <-cancelled:
			case <-time.After(10 * time.Second):
				t.Fatal("CANCEL while overloaded did not reach the edge")
			}
			<-waited
			mustHangUp(t, answered)

			r.p.admit.budget.Store(0)
			again, err := r.phone.invite(ctxT(t), line, callee, transport, r.port(transport))
			if err != nil {
				t.Fatal(err)
			}
			mustAnswer(t, again)
			mustHangUp(t, again)
		})
	}
}

// TestPeekAllocates nothing: it runs for every datagram the proxy reads.
func TestPeekAllocatesNothing(t *testing.T) {
	msg := []byte("BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>;x=1;tag=xy\r\nCall-ID: c\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() {
		if _, tag, _ := peekRequest(msg); string(tag) != "xy" {
			t.Fatalf("tag %q", tag)
		}
	}); n != 0 {
		t.Errorf("peekRequest allocates %v times a datagram", n)
	}
}

// TestUnansweredWindow: new requests the next hop has not answered at all
// are bounded (Options.MaxUnanswered); past the bound new calls get 503
// with Retry-After, and the next hop's first answer, a 100 Trying, makes
// room again. The next hop is a bare UDP socket, so nothing answers for
// it behind the test's back (sipgo's UAS sends 100 Trying on its own
// after 200 ms).
func TestUnansweredWindow(t *testing.T) {
	hop := loopbackUDP(t)
	r := newRig(t, "udp", func(o *Options, _ *rig) {
		o.Upstream = Endpoint{"udp", "127.0.0.1", hop.LocalAddr().(*net.UDPAddr).Port}
		o.MaxUnanswered = 2
		o.windowGrace = -1 // TestWindow has the grace
	})
	type relayed struct {
		req  *sip.Request
		from *net.UDPAddr
	}
	got := make(chan relayed, 64)
	go eachRequest(hop, func(req *sip.Request, from *net.UDPAddr) {
		if req.IsInvite() {
			got <- relayed{req, from}
		}
	})
	// nextInvite waits for the next INVITE with a Call-ID not seen before:
	// the proxy retransmits those it relayed.
	seen := map[string]relayed{}
	nextInvite := func() relayed {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case rl := <-got:
				if _, ok := seen[callID(rl.req)]; !ok {
					seen[callID(rl.req)] = rl
					return rl
				}
			case <-deadline:
				t.Fatal("the next hop got no new INVITE within 10 s")
			}
		}
	}
	call := func() *sipgo.DialogClientSession {
		t.Helper()
		s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	call()
	a := nextInvite()
	call()
	nextInvite()
	waitFor(t, "two new requests counted unanswered", func() bool { return r.p.Stats().Unanswered == 2 })

	refused := call()
	err := refused.WaitAnswer(ctxT(t), sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 503 || de.Res.GetHeader("Retry-After") == nil {
		t.Fatalf("third call with two unanswered: %v, want 503 with Retry-After", err)
	}
	if st := r.p.Stats(); st.Shed["unanswered"] == 0 {
		t.Errorf("shed by reason = %v, want unanswered counted", st.Shed)
	}

	trying := sip.NewResponseFromRequest(a.req, 100, "Trying", nil)
	if _, err := hop.WriteToUDP([]byte(trying.String()), a.from); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the answered request leaves the window", func() bool { return r.p.Stats().Unanswered == 1 })
	call()
	nextInvite() // relayed: there was room again
}

// TestRefusalAllocatesNothing: offered several times its capacity the
// proxy refuses thousands of requests a second.
func TestRefusalAllocatesNothing(t *testing.T) {
	req := []byte("INVITE sip:+15557654321@edge SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1\r\n" +
		"From: <sip:+15551230001@pbx>;tag=abc\r\nTo: <sip:+15557654321@edge>\r\nCall-ID: c1@pbx\r\nCSeq: 1 INVITE\r\n\r\n")
	buf := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(100, func() {
		if buf = refusal(buf[:0], req, shedUnanswered); len(buf) == 0 {
			t.Fatal("no refusal")
		}
	}); n != 0 {
		t.Errorf("refusal allocates %v times a request", n)
	}
}

// TestSalvaged: the header lines a stateless answer copies, full names
// and compact, whatever the case.
func TestSalvaged(t *testing.T) {
	want := map[string]byte{"via": 'v', "v": 'v', "to": 't', "t": 't', "from": 'o', "f": 'o', "call-id": 'o', "i": 'o', "cseq": 'o',
		"contact": 0, "m": 0, "max-forwards": 0, "content-length": 0, "l": 0, "x": 0, "tox": 0, "route": 0, "": 0}
	for name, kind := range want {
		for _, n := range []string{name, strings.ToUpper(name), strings.ToUpper(name[:min(1, len(name))]) + name[min(1, len(name)):]} {
			if got := salvaged([]byte(n)); got != kind {
				t.Errorf("salvaged(%q) = %q, want %q", n, got, kind)
			}
		}
	}
}

// TestWindow: a full window refuses only once it has stayed full for its
// grace, then whenever full until a hold passes without a refusal; at four
// times its size at once.
func TestWindow(t *testing.T) {
	ms := int64(time.Millisecond)
	type look struct {
		n, at  int64 // in the works, ms
		refuse bool
		coming int64 // admitted, on their way to a work slot
	}
	tests := []struct {
		name  string
		looks []look
	}{
		{"below the size", []look{{0, 0, false, 0}, {3, 1, false, 0}, {3, 500, false, 0}}},
		{"a stall shorter than the grace", []look{{4, 0, false, 0}, {9, 30, false, 0}, {2, 40, false, 0}, {4, 60, false, 0}, {4, 100, false, 0}}},
		{"full past the grace", []look{{4, 0, false, 0}, {5, 49, false, 0}, {5, 50, true, 0}, {4, 60, true, 0}}},
		{"held after a refusal", []look{{4, 0, false, 0}, {4, 50, true, 0}, {1, 51, false, 0}, {4, 52, true, 0}, {4, 1051, true, 0}}},
		{"the hold ends", []look{{4, 0, false, 0}, {4, 50, true, 0}, {1, 500, false, 0}, {4, 1050, false, 0}, {4, 1099, false, 0}, {4, 1100, true, 0}}},
		{"four times the size", []look{{16, 0, true, 0}, {3, 1, false, 0}, {4, 2, true, 0}}},
		{"those on their way fill it", []look{{1, 0, false, 2}, {1, 10, false, 3}, {2, 59, false, 2}, {0, 60, true, 4}}},
		{"but do not refuse at once", []look{{0, 0, false, 16}, {3, 1, false, 13}, {16, 2, true, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &window{size: 4, grace: 50 * time.Millisecond, hold: time.Second}
			for i, l := range tt.looks {
				if got := w.shed(l.n, l.coming, (1000+l.at)*ms); got != l.refuse {
					t.Fatalf("look %d (%d in the works, %d coming, at %d ms): shed = %v, want %v", i, l.n, l.coming, l.at, got, l.refuse)
				}
			}
		})
	}
}

// TestTransit: the count of new requests on their way to a work slot
// never goes below zero, and what is left in it decays by a quarter
// (rounded up) every transitDecay, so a request admitted and never handled
// cannot hold the window full.
func TestTransit(t *testing.T) {
	step := int64(transitDecay)
	tests := []struct {
		name              string
		admitted, arrived int
		after             int64 // since the last look
		want              int64
	}{
		{"counted", 5, 2, 0, 3},
		{"never below zero", 1, 3, 0, 0},
		{"within a step, no decay", 8, 0, step - 1, 8},
		{"one step", 8, 0, step, 6},
		{"two steps", 8, 0, 2 * step, 4},
		{"two steps and a half", 8, 0, 2*step + step/2, 4},
		{"rounded up, so it ends", 1, 0, step, 0},
		{"a long idle", 1000, 0, 3600 * int64(time.Second), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr transit
			now := int64(1e18)
			tr.decayedAt.Store(now)
			for range tt.admitted {
				tr.admitted()
			}
			for range tt.arrived {
				tr.arrived()
			}
			if got := tr.load(now + tt.after); got != tt.want {
				t.Errorf("load after %v = %d, want %d", time.Duration(tt.after), got, tt.want)
			}
			if at := tr.decayedAt.Load(); at > now+tt.after || now+tt.after-at >= step {
				t.Errorf("decayed up to %v before the look, want the last whole step", time.Duration(now+tt.after-at))
			}
			tr.admitted()
			if got := tr.n.Load(); got != tt.want+1 {
				t.Errorf("a request admitted after the look: %d, want %d", got, tt.want+1)
			}
		})
	}
	t.Run("looks a step and a half apart", func(t *testing.T) {
		var tr transit
		now := int64(1e18)
		tr.decayedAt.Store(now)
		for range 64 {
			tr.admitted()
		}
		tr.load(now + 3*step/2)
		if got := tr.load(now + 3*step); got != 27 {
			t.Errorf("after three steps' time in two looks: %d, want 27 (64 decayed three times)", got)
		}
	})
}
