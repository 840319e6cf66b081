package sipproxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
)

const (
	line   = "+15551230001"
	callee = "+15557654321"
)

// rig is the proxy with a phone (or PBX) on the local side and the edge
// upstream, all real sipgo user agents on loopback.
type rig struct {
	t     testing.TB
	p     *Proxy
	phone *peer
	edge  *peer
	ended chan dialog.Call
	logs  *syncBuffer
	// cancelled is closed by a test callee whose INVITE got cancelled.
	cancelled chan struct{}
	calleeBye chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newRig(t testing.TB, upTransport string, mod func(*Options, *rig)) *rig {
	t.Helper()
	return newRigAt(t, "127.0.0.1", upTransport, mod)
}

// newRigAt runs the proxy and its peers on host (127.0.0.1 or ::1).
func newRigAt(t testing.TB, host, upTransport string, mod func(*Options, *rig)) *rig {
	t.Helper()
	r := &rig{t: t, ended: make(chan dialog.Call, 100000), logs: &syncBuffer{}, cancelled: make(chan struct{}), calleeBye: make(chan error, 1)}
	r.edge = newPeerAt(t, "edge", callee, host)
	r.phone = newPeerAt(t, "phone", line, host)
	lines, _ := detect.NewLines([]string{line}, "1")
	opts := Options{
		Listen:   []Endpoint{{"udp", host, 0}, {"tcp", host, 0}},
		Upstream: Endpoint{upTransport, host, r.edge.port},
		Lines:    lines,
		Tracker:  dialog.New(dialog.Options{OnEnd: func(c dialog.Call) { r.ended <- c }}),
		// A test machine running packages in parallel under -race can
		// leave a datagram in the buffer for over 100 ms; the admission
		// tests set their reasons themselves.
		MaxQueueDelay: 10 * time.Second,
		// Debug, so the library's chatter is checked for numbers too.
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: logLevel(t)})),
	}
	if mod != nil {
		mod(&opts, r)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	runProxy(t, p)
	t.Cleanup(func() {
		if t.Failed() {
			// Always, not only with -v: a failure seen once in CI must
			// bring the proxy's side of the story with it.
			logs := r.logs.String()
			if n := len(logs); n > 32<<10 && !testing.Verbose() {
				logs = "...\n" + logs[n-32<<10:]
			}
			t.Log(logs)
		}
		// Numbers must never appear whole in logs.
		for _, n := range []string{"5551230001", "5557654321"} {
			if strings.Contains(r.logs.String(), n) {
				t.Errorf("log carries a whole number %s:\n%s", n, r.logs.String())
			}
		}
	})
	return r
}

// runProxy runs p until the test ends.
func runProxy(t testing.TB, p *Proxy) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// logLevel is Debug in tests, so the library's chatter is checked for
// numbers too, and Info in benchmarks, so logging does not skew figures.
func logLevel(t testing.TB) slog.Level {
	if _, ok := t.(*testing.B); ok {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

func (r *rig) port(transport string) int { return r.p.Ports()[transport] }

// wantCall waits for the usage of the next ended call.
func (r *rig) wantCall() dialog.Call {
	r.t.Helper()
	select {
	case c := <-r.ended:
		return c
	case <-time.After(40 * time.Second):
		r.t.Fatal("no call ended within 40s")
		return dialog.Call{}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitConfirmed(t *testing.T, s *sipgo.DialogServerSession) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.LoadState() != sip.DialogStateConfirmed {
		if time.Now().After(deadline) {
			t.Fatal("dialog not confirmed (no ACK) within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOutboundCalls(t *testing.T) {
	// Who the tracker says hung up, by the BYE's way through the proxy.
	byeSender := map[string]dialog.Party{"answered, caller hangs up": dialog.Caller, "answered, callee hangs up": dialog.Callee}
	type outcome struct {
		status      int // what the caller ends with
		disposition dialog.Disposition
		answered    bool
	}
	tests := []struct {
		name   string
		answer func(t *testing.T, r *rig, s *sipgo.DialogServerSession, tx sip.ServerTransaction)
		// caller plays the caller's part after the INVITE is out.
		caller func(t *testing.T, r *rig, s *sipgo.DialogClientSession) int
		want   outcome
	}{
		{
			name: "answered, caller hangs up",
			caller: func(t *testing.T, r *rig, s *sipgo.DialogClientSession) int {
				mustAnswer(t, s)
				mustHangUp(t, s)
				r.edge.wantRequest(sip.BYE)
				return 200
			},
			want: outcome{200, dialog.Answered, true},
		},
		{
			name: "answered, callee hangs up",
			answer: func(t *testing.T, r *rig, s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
				s.Respond(200, "OK", []byte(testSDP), sip.NewHeader("Content-Type", "application/sdp"))
				go func() {
					waitConfirmed(t, s)
					r.calleeBye <- s.Bye(context.Background())
				}()
			},
			caller: func(t *testing.T, r *rig, s *sipgo.DialogClientSession) int {
				mustAnswer(t, s)
				r.phone.wantRequest(sip.BYE)
				if err := <-r.calleeBye; err != nil {
					t.Errorf("callee BYE: %v", err)
				}
				return 200
			},
			want: outcome{200, dialog.Answered, true},
		},
		{
			name: "re-INVITE then BYE",
			caller: func(t *testing.T, r *rig, s *sipgo.DialogClientSession) int {
				mustAnswer(t, s)
				re := sip.NewRequest(sip.INVITE, s.InviteResponse.Contact().Address)
				re.SetBody([]byte(testSDP))
				re.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				res, err := s.Do(ctxT(t), re)
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("re-INVITE: %v %v", res, err)
				}
				if got := r.edge.nth(sip.INVITE, 1); !hasToTag(got) {
					t.Fatalf("edge got a re-INVITE without a To tag")
				}
				ack := sip.NewRequest(sip.ACK, s.InviteResponse.Contact().Address)
				ack.AppendHeader(sip.NewHeader("CSeq", fmt.Sprintf("%d ACK", re.CSeq().SeqNo)))
				s.WriteRequest(ack)
				mustHangUp(t, s)
				return 200
			},
			want: outcome{200, dialog.Answered, true},
		},
		{
			name: "busy",
			answer: func(t *testing.T, r *rig, s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
				s.Respond(486, "Busy Here", nil)
			},
			caller: func(t *testing.T, r *rig, s *sipgo.DialogClientSession) int {
				return answerStatus(t, s.WaitAnswer(ctxT(t), sipgo.AnswerOptions{}))
			},
			want: outcome{486, dialog.Busy, false},
		},
		{
			name: "rejected",
			answer: func(t *testing.T, r *rig, s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
				s.Respond(403, "Forbidden", nil)
			},
			caller: func(t *testing.T, r *rig, s *sipgo.DialogClientSession) int {
				return answerStatus(t, s.WaitAnswer(ctxT(t), sipgo.AnswerOptions{}))
			},
			want: outcome{403, dialog.Failed, false},
		},
		{
			name: "no answer, caller cancels",
			answer: func(t *testing.T, r *rig, s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
				s.Respond(180, "Ringing", nil)
				<-tx.Done()
				if errors.Is(tx.Err(), sip.ErrTransactionCanceled) {
					close(r.cancelled)
				}
			},
			caller: func(t *testing.T, r *rig, s *sipgo.DialogClientSession) int {
				ctx, cancel := context.WithCancel(ctxT(t))
				err := s.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
					if res.StatusCode == 180 {
						cancel()
					}
					return nil
				}})
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("WaitAnswer after CANCEL = %v", err)
				}
				select {
				case <-r.cancelled:
				case <-time.After(10 * time.Second):
					t.Fatal("the edge's INVITE was not cancelled")
				}
				return 487
			},
			want: outcome{487, dialog.Cancelled, false},
		},
	}
	for _, transport := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(transport+"/"+tt.name, func(t *testing.T) {
				r := newRig(t, transport, nil)
				if tt.answer != nil {
					r.edge.setAnswer(func(s *sipgo.DialogServerSession, tx sip.ServerTransaction) { tt.answer(t, r, s, tx) })
				}
				s, err := r.phone.invite(ctxT(t), line, callee, transport, r.port(transport))
				if err != nil {
					t.Fatal(err)
				}
				got := tt.caller(t, r, s)
				if got != tt.want.status {
					t.Errorf("caller ended with %d, want %d", got, tt.want.status)
				}
				inv := r.edge.nth(sip.INVITE, 0)
				if inv.RecordRoute() == nil {
					t.Error("edge got an INVITE without Record-Route")
				}
				if v := inv.Via(); v == nil || v.Port != r.port(transport) {
					t.Errorf("edge's top Via = %v, want the proxy's", v)
				}
				if mf := inv.MaxForwards(); mf == nil || mf.Val() != 69 {
					t.Errorf("Max-Forwards at the edge = %v, want 69", mf)
				}
				c := r.wantCall()
				if c.Line != line || c.Direction != detect.Outbound || c.Remote != callee {
					t.Errorf("call = line %s dir %s remote %s", c.Line, c.Direction, c.Remote)
				}
				if c.Disposition != tt.want.disposition || c.FinalStatus != tt.want.status && tt.want.status != 487 {
					t.Errorf("disposition %s status %d, want %s %d", c.Disposition, c.FinalStatus, tt.want.disposition, tt.want.status)
				}
				if want, ok := byeSender[tt.name]; ok && c.EndedBy != want {
					t.Errorf("ended by %q, want %q", c.EndedBy, want)
				}
				if tt.want.answered != !c.AnsweredAt.IsZero() || c.EndedAt.Before(c.StartedAt) {
					t.Errorf("times: started %v answered %v ended %v", c.StartedAt, c.AnsweredAt, c.EndedAt)
				}
				if st := r.p.Stats(); st.CallsActive != 0 || st.Panics != 0 {
					t.Errorf("after the call: %d active, %d panics", st.CallsActive, st.Panics)
				}
			})
		}
	}
}

// TestIPv6 runs a call over IPv6 loopback, UDP and TCP.
func TestIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	} else {
		c.Close()
	}
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			r := newRigAt(t, "::1", transport, nil)
			s, err := r.phone.invite(ctxT(t), line, callee, transport, r.port(transport))
			if err != nil {
				t.Fatal(err)
			}
			mustAnswer(t, s)
			mustHangUp(t, s)
			if rr := r.edge.nth(sip.INVITE, 0).RecordRoute(); rr == nil || bareHost(rr.Address.Host) != "::1" {
				t.Errorf("Record-Route = %v, want the proxy's IPv6 address", rr)
			}
			if c := r.wantCall(); c.Disposition != dialog.Answered || c.Duration() <= 0 {
				t.Errorf("call = %+v", c)
			}
		})
	}
}

func mustAnswer(t testing.TB, s *sipgo.DialogClientSession) {
	t.Helper()
	if err := s.WaitAnswer(ctxT(t), sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("WaitAnswer: %v", err)
	}
	if err := s.Ack(ctxT(t)); err != nil {
		t.Fatalf("ACK: %v", err)
	}
}

// mustHangUp ends an answered call from the caller's side.
func mustHangUp(t testing.TB, s *sipgo.DialogClientSession) {
	t.Helper()
	if err := s.Bye(ctxT(t)); err != nil {
		t.Fatalf("BYE: %v", err)
	}
}

func answerStatus(t *testing.T, err error) int {
	t.Helper()
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) {
		t.Fatalf("WaitAnswer = %v, want a final error response", err)
	}
	return de.Res.StatusCode
}

// TestRegisterThenInbound registers a phone through the proxy, then has
// the edge call the registered contact, in both register modes.
func TestRegisterThenInbound(t *testing.T) {
	for _, mode := range []RegisterMode{RegisterPath, RegisterContact} {
		t.Run(string(mode), func(t *testing.T) {
			r := newRig(t, "udp", func(o *Options, _ *rig) { o.RegisterMode = mode })
			reg := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "edge.invalid"})
			aor := sip.Uri{Scheme: "sip", User: line, Host: "edge.invalid"}
			reg.AppendHeader(&sip.FromHeader{Address: aor, Params: tagParams()})
			reg.AppendHeader(&sip.ToHeader{Address: aor})
			own := sip.Uri{Scheme: "sip", User: line, Host: "127.0.0.1", Port: r.phone.port}
			reg.AppendHeader(&sip.ContactHeader{Address: own})
			reg.AppendHeader(sip.NewHeader("Route", fmt.Sprintf("<sip:127.0.0.1:%d;lr>", r.port("udp"))))
			res, err := r.phone.cli.Do(ctxT(t), reg)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("REGISTER: %v %v", res, err)
			}
			if c := res.Contact(); c == nil || c.Address.Port != r.phone.port {
				t.Errorf("phone sees contact %v in the 200, want its own", c)
			}
			got := r.edge.wantRequest(sip.REGISTER)
			var route []sip.Header
			target := own
			switch mode {
			case RegisterPath:
				path := got.GetHeader("Path")
				if path == nil {
					t.Fatal("registrar got no Path")
				}
				route = append(route, sip.NewHeader("Route", path.Value()))
			case RegisterContact:
				c := got.Contact()
				if c == nil || !strings.HasPrefix(c.Address.User, aliasPrefix) || c.Address.Port != r.port("udp") {
					t.Fatalf("registrar got contact %v, want an alias at the proxy", c)
				}
				target = c.Address
			}
			if b := r.p.Registrations()[line]; len(b) != 1 || !strings.Contains(b[0].Contact, fmt.Sprint(r.phone.port)) {
				t.Errorf("bindings for the line = %+v", b)
			}

			// The edge calls the phone.
			inv := sip.NewRequest(sip.INVITE, target)
			inv.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: callee, Host: "edge.invalid"}, Params: tagParams()})
			inv.AppendHeader(&sip.ToHeader{Address: aor})
			inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			for _, h := range route {
				inv.AppendHeader(h)
			}
			if mode == RegisterContact {
				inv.SetDestination(fmt.Sprintf("127.0.0.1:%d", r.port("udp")))
			}
			inv.SetBody([]byte(testSDP))
			s, err := r.edge.dcc.WriteInvite(ctxT(t), inv)
			if err != nil {
				t.Fatal(err)
			}
			mustAnswer(t, s)
			mustHangUp(t, s)
			r.phone.wantRequest(sip.BYE)
			c := r.wantCall()
			if c.Direction != detect.Inbound || c.Line != line || c.Remote != callee || c.Disposition != dialog.Answered {
				t.Errorf("inbound call = %+v", c)
			}
		})
	}
}

// TestRegisterPathStrictRegistrars: in path mode the agent announces Path
// support on the phone's behalf, so a strict registrar (kamailio's
// path_mode 2) takes it; a registrar that refuses Path (420) or ignores
// it (no Path in its 200) would never route calls through the agent, so
// the agent goes on in contact mode, and the phone's next REGISTER
// succeeds that way. Each line's last answer is kept.
func TestRegisterPathStrictRegistrars(t *testing.T) {
	tests := []struct {
		policy       string
		firstStatus  int
		wantFallback bool
	}{
		{"", 200, false},
		{"420", 200, false},
		{"ignore", 200, true},
		{"420 always", 420, true},
	}
	for _, tt := range tests {
		t.Run("registrar "+cmp.Or(tt.policy, "echoes Path"), func(t *testing.T) {
			r := newRig(t, "udp", func(o *Options, _ *rig) { o.RegisterMode = RegisterPath })
			r.edge.mu.Lock()
			r.edge.pathPolicy = tt.policy
			r.edge.mu.Unlock()
			register := func() int {
				t.Helper()
				reg := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "edge.invalid"})
				aor := sip.Uri{Scheme: "sip", User: line, Host: "edge.invalid"}
				reg.AppendHeader(&sip.FromHeader{Address: aor, Params: tagParams()})
				reg.AppendHeader(&sip.ToHeader{Address: aor})
				reg.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: line, Host: "127.0.0.1", Port: r.phone.port}})
				reg.AppendHeader(sip.NewHeader("Route", fmt.Sprintf("<sip:127.0.0.1:%d;lr>", r.port("udp"))))
				res, err := r.phone.cli.Do(ctxT(t), reg)
				if err != nil {
					t.Fatal(err)
				}
				return res.StatusCode
			}
			if got := register(); got != tt.firstStatus {
				t.Fatalf("first REGISTER: %d, want %d", got, tt.firstStatus)
			}
			first := r.edge.wantRequest(sip.REGISTER)
			if first.GetHeader("Path") == nil || !headerHasTag(first, "Supported", "path") {
				t.Fatalf("registrar got Path %v, Supported %v; want both", first.GetHeader("Path"), first.GetHeader("Supported"))
			}
			if got := r.p.RegisterModeInForce() == RegisterContact; got != tt.wantFallback {
				t.Fatalf("fell back to contact mode: %v, want %v", got, tt.wantFallback)
			}
			if got := register(); got != 200 {
				t.Fatalf("second REGISTER: %d, want 200", got)
			}
			second := r.edge.wantRequest(sip.REGISTER)
			hasPath := second.GetHeader("Path") != nil
			alias := second.Contact() != nil && strings.HasPrefix(second.Contact().Address.User, aliasPrefix)
			if hasPath == tt.wantFallback || alias != tt.wantFallback {
				t.Errorf("second REGISTER: Path %v, contact alias %v; want the fallback %v", hasPath, alias, tt.wantFallback)
			}
			res := r.p.RegisterResults()[line]
			if res.Status != 200 || res.Failing() {
				t.Errorf("the line's last answer = %+v, want a 200", res)
			}
		})
	}
}

// TestLargeRequestOverUDP sends an INVITE over 1,300 bytes on UDP: the
// proxy relays it over TCP (RFC 3261 18.1.1) and the call completes.
func TestLargeRequestOverUDP(t *testing.T) {
	r := newRig(t, "udp", nil)
	pad := sip.NewHeader("X-Padding", strings.Repeat("p", 1400))
	s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"), pad)
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	inv := r.edge.wantRequest(sip.INVITE)
	if inv.Transport() != "TCP" {
		t.Errorf("edge got the large INVITE over %s, want TCP", inv.Transport())
	}
	mustHangUp(t, s)
	if c := r.wantCall(); c.Disposition != dialog.Answered {
		t.Errorf("call = %+v", c)
	}
	if r.p.Stats().TCPSwitches == 0 {
		t.Error("TCP switch not counted")
	}
}

// TestMalformedMidCall sends an unparsable request in the middle of a call:
// it gets a 400 and the call goes on to a clean end.
func TestMalformedMidCall(t *testing.T) {
	r := newRig(t, "udp", nil)
	s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)

	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bad := "INVITE sip:" + callee + "@edge.invalid SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + conn.LocalAddr().String() + ";branch=z9hG4bKbroken1\r\n" +
		"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: broken-1\r\n" +
		"CSeq: notanumber INVITE\r\nContent-Length: 0\r\n\r\n"
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: r.port("udp")}
	if _, err := conn.WriteTo([]byte(bad), dst); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no reply to a malformed request: %v", err)
	}
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 400 ") || !strings.Contains(string(buf[:n]), "broken-1") {
		t.Errorf("reply to a malformed request:\n%s", buf[:n])
	}
	mustHangUp(t, s)
	if c := r.wantCall(); c.Disposition != dialog.Answered {
		t.Errorf("call = %+v", c)
	}
	if st := r.p.Stats(); st.ParseErrors != 1 {
		t.Errorf("parse errors = %d, want 1", st.ParseErrors)
	}
}

// TestDecision checks the hook: a blocked INVITE is answered by the proxy
// with the rule in a Warning; a panicking decision lets calls through.
func TestDecision(t *testing.T) {
	var calls sync.Map
	r := newRig(t, "udp", func(o *Options, _ *rig) {
		o.Decider = detect.DeciderFunc(func(ev *detect.Event) detect.Verdict {
			calls.Store(ev.Request.Method, true)
			switch ev.Request.Recipient.User {
			case "+15550000001":
				return detect.Verdict{Block: true, Status: 403, Rule: "test.rule"}
			case "+15550000002":
				panic("rule bug")
			}
			return detect.Allow
		})
	})
	s, err := r.phone.invite(ctxT(t), line, "+15550000001", "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	err = s.WaitAnswer(ctxT(t), sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 403 {
		t.Fatalf("blocked call: %v", err)
	}
	if w := de.Res.GetHeader("Warning"); w == nil || w.Value() != `399 leadport-agent "test.rule"` {
		t.Errorf("Warning = %v", w)
	}
	c := r.wantCall()
	if c.Disposition != dialog.Blocked || c.BlockedBy != "test.rule" || c.FinalStatus != 403 {
		t.Errorf("blocked call record = %+v", c)
	}

	s, err = r.phone.invite(ctxT(t), line, "+15550000002", "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	mustHangUp(t, s)
	if c := r.wantCall(); c.Disposition != dialog.Answered {
		t.Errorf("call through a panicking decision = %+v", c)
	}
	if st := r.p.Stats(); st.DecisionPanics != 1 || st.Blocked != 1 || st.Decisions < 2 {
		t.Errorf("stats = %+v", st)
	}
}

// TestPanicInHandler: a request whose handling panics gets a 500, the
// panic is counted and logged with the Call-ID, and the next call works.
func TestPanicInHandler(t *testing.T) {
	r := newRig(t, "udp", func(o *Options, _ *rig) {
		o.testHook = func(req *sip.Request) {
			if req.Recipient.User == "+15550000003" {
				panic("handler bug")
			}
		}
	})
	s, err := r.phone.invite(ctxT(t), line, "+15550000003", "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	if got := answerStatus(t, s.WaitAnswer(ctxT(t), sipgo.AnswerOptions{})); got != 500 {
		t.Errorf("status after a panic = %d, want 500", got)
	}
	s, err = r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	mustHangUp(t, s)
	if c := r.wantCall(); c.Disposition != dialog.Answered {
		t.Errorf("call after the panic = %+v", c)
	}
	if st := r.p.Stats(); st.Panics != 1 {
		t.Errorf("panics = %d, want 1", st.Panics)
	}
	if !strings.Contains(r.logs.String(), "recovered a panic") || !strings.Contains(r.logs.String(), "call_id=") {
		t.Error("the panic is not logged with its Call-ID")
	}
}

// TestOverload: with MaxPending requests waiting for an answer, a new
// call gets 503 with Retry-After at once, and calls go through again once
// the pending ones are answered.
func TestOverload(t *testing.T) {
	r := newRig(t, "udp", func(o *Options, _ *rig) { o.MaxPending = 1 })
	release := make(chan struct{})
	r.edge.setAnswer(func(s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
		s.Respond(180, "Ringing", nil)
		<-release
		s.Respond(486, "Busy Here", nil)
	})
	first, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		var de *sipgo.ErrDialogResponse
		if err := first.WaitAnswer(ctxT(t), sipgo.AnswerOptions{}); errors.As(err, &de) {
			done <- de.Res.StatusCode
		} else {
			done <- 0
		}
	}()
	r.edge.wantRequest(sip.INVITE)
	second, err := r.phone.invite(ctxT(t), line, "+15557654322", "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	err = second.WaitAnswer(ctxT(t), sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 503 || de.Res.GetHeader("Retry-After") == nil {
		t.Fatalf("second call while overloaded: %v", err)
	}
	close(release)
	if got := <-done; got != 486 {
		t.Errorf("first call ended with %d, want 486", got)
	}
	if st := r.p.Stats(); st.Overloaded != 1 {
		t.Errorf("overloaded = %d, want 1", st.Overloaded)
	}
	r.edge.setAnswer(nil)
	deadline := time.Now().Add(5 * time.Second)
	for r.p.Stats().Pending != 0 {
		if time.Now().After(deadline) {
			t.Fatal("pending requests not released")
		}
		time.Sleep(time.Millisecond)
	}
	third, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, third)
	mustHangUp(t, third)
}

// TestRedirectFromLocal has the PBX answer an inbound call with 302: the
// decision replaces it, so the edge never sees the redirect.
func TestRedirectFromLocal(t *testing.T) {
	r := newRig(t, "udp", func(o *Options, r *rig) {
		// The edge on its own socket, as on a device with a public side.
		o.UpstreamListen = []Endpoint{{"udp", "127.0.0.1", 0}}
		o.Local = Endpoint{"udp", "127.0.0.1", r.phone.port}
		o.Decider = detect.DeciderFunc(func(ev *detect.Event) detect.Verdict {
			if ev.Response != nil && ev.Response.StatusCode >= 300 && ev.Response.StatusCode < 400 {
				return detect.Verdict{Block: true, Status: 403, Rule: "forwarding.redirect"}
			}
			return detect.Allow
		})
	})
	r.phone.setAnswer(func(s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
		s.Respond(302, "Moved Temporarily", nil, sip.NewHeader("Contact", "<sip:+15559999999@elsewhere.invalid>"))
	})
	inv := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: line, Host: "127.0.0.1", Port: r.p.UpstreamPorts()["udp"]})
	inv.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: callee, Host: "edge.invalid"}, Params: tagParams()})
	inv.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: line, Host: "edge.invalid"}})
	inv.SetBody([]byte(testSDP))
	s, err := r.edge.dcc.WriteInvite(ctxT(t), inv)
	if err != nil {
		t.Fatal(err)
	}
	err = s.WaitAnswer(ctxT(t), sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 403 || de.Res.GetHeader("Warning") == nil {
		t.Fatalf("edge got %v, want 403 with a Warning", err)
	}
	c := r.wantCall()
	if c.Direction != detect.Inbound || c.Disposition != dialog.Blocked || c.BlockedBy != "forwarding.redirect" {
		t.Errorf("call = %+v", c)
	}
}

func TestProxyAnswers(t *testing.T) {
	r := newRig(t, "udp", nil)
	tests := []struct {
		name   string
		build  func() *sip.Request
		status int
	}{
		{"OPTIONS to the proxy", func() *sip.Request {
			return sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: r.port("udp")})
		}, 200},
		{"Max-Forwards 0", func() *sip.Request {
			req := sip.NewRequest(sip.MESSAGE, sip.Uri{Scheme: "sip", User: callee, Host: "edge.invalid"})
			mf := sip.MaxForwardsHeader(0)
			req.AppendHeader(&mf)
			return req
		}, 483},
		{"unmatched CANCEL", func() *sip.Request {
			return sip.NewRequest(sip.CANCEL, sip.Uri{Scheme: "sip", User: callee, Host: "edge.invalid"})
		}, 481},
		{"MESSAGE relayed", func() *sip.Request {
			return sip.NewRequest(sip.MESSAGE, sip.Uri{Scheme: "sip", User: callee, Host: "edge.invalid"})
		}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.build()
			req.SetDestination(fmt.Sprintf("127.0.0.1:%d", r.port("udp")))
			res, err := r.phone.cli.Do(ctxT(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status {
				t.Errorf("status %d, want %d", res.StatusCode, tt.status)
			}
		})
	}
}
