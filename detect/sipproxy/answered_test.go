package sipproxy

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// loopbackUDP is a bare UDP socket on 127.0.0.1 for the test: a next hop
// or a client that speaks raw SIP.
func loopbackUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eachRequest hands fn each request c reads, until c is closed.
func eachRequest(c *net.UDPConn, fn func(req *sip.Request, from *net.UDPAddr)) {
	buf := make([]byte, 65535)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...)); err == nil {
			if req, ok := m.(*sip.Request); ok {
				fn(req, from)
			}
		}
	}
}

func parseRequest(t *testing.T, raw string) *sip.Request {
	t.Helper()
	m, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	req.SetTransport("UDP")
	return req
}

func rawRequest(method, branch, cseqMethod string) string {
	return fmt.Sprintf("%s sip:%s@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=%s\r\n"+
		"From: <sip:%s@127.0.0.1>;tag=a\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		method, callee, branch, line, callee, cseqMethod)
}

// TestAnswers: the ring keeps final answers to UDP requests for the
// linger, matched as RFC 3261 17.2.3 matches a request to its server
// transaction, and never holds more than answersMax.
func TestAnswers(t *testing.T) {
	defer lingerNs.Store(lingerNs.Load())
	lingerNs.Store(int64(time.Hour))
	a := newAnswers()
	inv := parseRequest(t, rawRequest("INVITE", "z9hG4bK-inv", "INVITE"))
	busy := sip.NewResponseFromRequest(inv, 486, "Busy Here", nil)
	a.remember(inv, sip.NewResponseFromRequest(inv, 180, "Ringing", nil))
	if a.len() != 0 {
		t.Fatal("a provisional answer was kept")
	}
	a.remember(inv, busy)
	tcp := parseRequest(t, rawRequest("MESSAGE", "z9hG4bK-tcp", "MESSAGE"))
	tcp.SetTransport("TCP")
	a.remember(tcp, sip.NewResponseFromRequest(tcp, 200, "OK", nil))
	old := parseRequest(t, rawRequest("MESSAGE", "1234", "MESSAGE")) // RFC 2543 branch
	a.remember(old, sip.NewResponseFromRequest(old, 200, "OK", nil))

	for _, c := range []struct {
		name string
		req  *sip.Request
		as   sip.RequestMethod
		want *sip.Response
	}{
		{"the INVITE again", parseRequest(t, rawRequest("INVITE", "z9hG4bK-inv", "INVITE")), "", busy},
		{"its ACK", parseRequest(t, rawRequest("ACK", "z9hG4bK-inv", "ACK")), "", busy},
		{"its CANCEL, as the INVITE", parseRequest(t, rawRequest("CANCEL", "z9hG4bK-inv", "CANCEL")), sip.INVITE, busy},
		{"its CANCEL, as itself", parseRequest(t, rawRequest("CANCEL", "z9hG4bK-inv", "CANCEL")), "", nil},
		{"another branch", parseRequest(t, rawRequest("INVITE", "z9hG4bK-other", "INVITE")), "", nil},
		{"over TCP", tcp, "", nil},
		{"an RFC 2543 branch", old, "", nil},
	} {
		if got := a.lookup(c.req, c.as); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}

	lingerNs.Store(1) // everything kept is now past the linger
	if got := a.lookup(inv, ""); got != nil {
		t.Errorf("past the linger: got %v", got)
	}
	next := parseRequest(t, rawRequest("MESSAGE", "z9hG4bK-next", "MESSAGE"))
	a.remember(next, sip.NewResponseFromRequest(next, 200, "OK", nil))
	if a.len() != 1 {
		t.Errorf("kept %d after a new answer past the linger, want 1 (the rest dropped)", a.len())
	}

	lingerNs.Store(int64(time.Hour))
	for i := range answersMax + 10 {
		r := parseRequest(t, rawRequest("MESSAGE", fmt.Sprintf("z9hG4bK-%d", i), "MESSAGE"))
		a.remember(r, sip.NewResponseFromRequest(r, 200, "OK", nil))
	}
	if a.len() != answersMax {
		t.Errorf("kept %d, want the bound %d", a.len(), answersMax)
	}
	if a.lookup(parseRequest(t, rawRequest("MESSAGE", "z9hG4bK-0", "MESSAGE")), "") != nil {
		t.Error("the oldest answer is still kept past the bound")
	}
	if a.lookup(parseRequest(t, rawRequest("MESSAGE", fmt.Sprintf("z9hG4bK-%d", answersMax+9), "MESSAGE")), "") == nil {
		t.Error("the newest answer is not kept")
	}
}

// TestRetransmissionAnswered: a request retransmitted after its final
// answer gets that answer again from the proxy, and the next hop never
// sees it twice; a CANCEL that comes after its INVITE was answered is
// answered 200 and goes no further.
func TestRetransmissionAnswered(t *testing.T) {
	// Long enough for a client that resends after 500 ms (a retransmission
	// that meets the ending transaction is dropped, as by sipgo).
	defer lingerNs.Store(lingerNs.Load())
	lingerNs.Store(int64(time.Minute))
	hop := loopbackUDP(t)
	r := newRig(t, "udp", func(o *Options, _ *rig) {
		o.Upstream = Endpoint{"udp", "127.0.0.1", hop.LocalAddr().(*net.UDPAddr).Port}
	})
	// The next hop answers every request but ACK with 200 (an INVITE with
	// 486), and reports each request's method and Call-ID.
	relayed := make(chan string, 64)
	go eachRequest(hop, func(req *sip.Request, from *net.UDPAddr) {
		relayed <- string(req.Method) + " " + callID(req)
		if req.IsAck() {
			return
		}
		status, reason := 200, "OK"
		if req.IsInvite() {
			status, reason = 486, "Busy Here"
		}
		res := sip.NewResponseFromRequest(req, status, reason, nil)
		res.To().Params.Add("tag", "hop")
		hop.WriteToUDP([]byte(res.String()), from)
	})
	nextRelayed := func() string {
		t.Helper()
		select {
		case m := <-relayed:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("the next hop got nothing within 10 s")
			return ""
		}
	}

	phone := loopbackUDP(t)
	proxyAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: r.port("udp")}
	request := func(method, branch, cid, cseq string) []byte {
		return []byte(fmt.Sprintf("%s sip:%s@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s;rport\r\n"+
			"From: <sip:%s@127.0.0.1>;tag=a\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: %s\r\nCSeq: 1 %s\r\n"+
			"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n", method, callee, phone.LocalAddr(), branch, line, callee, cid, cseq))
	}
	// answer sends raw, again every 500 ms as a UDP client does (a
	// retransmission that meets the ending transaction is dropped), and
	// returns the status of the first final answer to it.
	answer := func(raw []byte, cid, cseq string) int {
		t.Helper()
		buf := make([]byte, 65535)
		deadline := time.Now().Add(10 * time.Second)
		next := time.Now()
		for {
			if time.Now().After(deadline) {
				t.Fatalf("no final answer to %s within 10 s", cseq)
			}
			if !time.Now().Before(next) {
				if _, err := phone.WriteToUDP(raw, proxyAddr); err != nil {
					t.Fatal(err)
				}
				next = time.Now().Add(500 * time.Millisecond)
			}
			phone.SetReadDeadline(next)
			n, _, err := phone.ReadFromUDP(buf)
			if err != nil {
				continue // resend
			}
			m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			res, ok := m.(*sip.Response)
			if err != nil || !ok || res.StatusCode < 200 || res.CSeq() == nil || string(res.CSeq().MethodName) != cseq || callID(res) != cid {
				continue
			}
			return res.StatusCode
		}
	}

	msg := request("MESSAGE", "z9hG4bK-msg1", "m1", "MESSAGE")
	if got := answer(msg, "m1", "MESSAGE"); got != 200 {
		t.Fatalf("MESSAGE: %d, want 200", got)
	}
	if got := nextRelayed(); got != "MESSAGE m1" {
		t.Fatalf("relayed %q, want the MESSAGE", got)
	}
	// Retransmitted until one is answered from the kept answer: the first
	// may still meet sipgo's transaction, which ends a moment after its
	// answer (and answers it too).
	deadline := time.Now().Add(10 * time.Second)
	for r.p.Stats().Retransmitted == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no retransmission answered from the kept answer within 10 s")
		}
		if got := answer(msg, "m1", "MESSAGE"); got != 200 {
			t.Fatalf("the MESSAGE retransmitted: %d, want its 200 again", got)
		}
	}

	inv := request("INVITE", "z9hG4bK-inv1", "i1", "INVITE")
	if got := answer(inv, "i1", "INVITE"); got != 486 {
		t.Fatalf("INVITE: %d, want 486", got)
	}
	if _, err := phone.WriteToUDP([]byte(strings.Replace(string(request("ACK", "z9hG4bK-inv1", "i1", "ACK")),
		"To: <sip:"+callee+"@127.0.0.1>", "To: <sip:"+callee+"@127.0.0.1>;tag=hop", 1)), proxyAddr); err != nil {
		t.Fatal(err)
	}
	if got := answer(request("CANCEL", "z9hG4bK-inv1", "i1", "CANCEL"), "i1", "CANCEL"); got != 200 {
		t.Fatalf("a CANCEL after the INVITE's answer: %d, want 200", got)
	}
	// The next hop saw the INVITE and the proxy's ACK for its 486, and
	// nothing of the retransmitted MESSAGE or the late CANCEL: the next
	// request it sees is a new one.
	for _, want := range []string{"INVITE i1", "ACK i1"} {
		if got := nextRelayed(); got != want {
			t.Fatalf("relayed %q, want %q", got, want)
		}
	}
	if got := answer(request("MESSAGE", "z9hG4bK-msg2", "m2", "MESSAGE"), "m2", "MESSAGE"); got != 200 {
		t.Fatalf("a new MESSAGE: %d, want 200", got)
	}
	if got := nextRelayed(); got != "MESSAGE m2" {
		t.Fatalf("relayed %q, want the new MESSAGE (a retransmission or the CANCEL went through)", got)
	}
	// The CANCEL may have reached the INVITE's transaction before it ended
	// (sipgo answers it then): it counts only when it did not.
	if st := r.p.Stats(); st.Retransmitted < 1 || st.Retransmitted > 2 {
		t.Errorf("Retransmitted = %d, want the MESSAGE and perhaps the CANCEL", st.Retransmitted)
	}
	if st := r.p.Stats(); st.AnswersKept == 0 {
		t.Error("no answer kept")
	}
}
