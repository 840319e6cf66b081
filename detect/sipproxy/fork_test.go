package sipproxy

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/dialog"
)

// TestForkedAnswers: a forking upstream answers one INVITE twice, from two
// branches (two To tags). The caller must get both 2xx (RFC 3261 16.7
// step 5 and RFC 6026), the second after the INVITE transaction has
// ended; the call is answered once. The two answers leave together, so
// the proxy's per-response goroutines may take them in either order, and
// one may find the client transaction just as it ends and be dropped there
// (Timer M is 0: see SetTransactionLinger); the edge retransmits both
// every 100 ms, as a UAS retransmits its 2xx until the ACK (RFC 3261
// 13.3.1.4), and the retransmission must then come through.
func TestForkedAnswers(t *testing.T) {
	r := newRig(t, "udp", nil)
	stop := make(chan struct{})
	defer close(stop)
	r.edge.setAnswer(func(s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
		inv := s.InviteRequest
		var answers []*sip.Response
		for _, tag := range []string{"fork1", "fork2"} {
			res := sip.NewResponseFromRequest(inv, 200, "OK", []byte(testSDP))
			res.To().Params.Add("tag", tag)
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: tag, Host: "127.0.0.1", Port: r.edge.port}})
			res.SetDestination(inv.Source())
			answers = append(answers, res)
		}
		// The first through the transaction; the second as another UAS's,
		// not through this one's transaction, which its own Timer L (0 in
		// this process) may have ended.
		if err := tx.Respond(answers[0]); err != nil {
			t.Errorf("edge answer fork1: %v", err)
		}
		if err := r.edge.srv.WriteResponse(answers[1]); err != nil {
			t.Errorf("edge answer fork2: %v", err)
		}
		go func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					for _, res := range answers {
						r.edge.srv.WriteResponse(res)
					}
				}
			}
		}()
	})

	caller, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	me := caller.LocalAddr().String()
	body := testSDP
	invite := "INVITE sip:" + callee + "@edge.invalid SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + me + ";branch=z9hG4bKfork-test;rport\r\n" +
		fmt.Sprintf("Route: <sip:127.0.0.1:%d;lr>\r\n", r.port("udp")) +
		"Max-Forwards: 70\r\n" +
		"From: <sip:" + line + "@127.0.0.1>;tag=caller1\r\n" +
		"To: <sip:" + callee + "@edge.invalid>\r\n" +
		"Call-ID: fork-test-1\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:" + line + "@" + me + ">\r\n" +
		"Content-Type: application/sdp\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: r.port("udp")}
	if _, err := caller.WriteTo([]byte(invite), dst); err != nil {
		t.Fatal(err)
	}
	tags := map[string]bool{}
	buf := make([]byte, 65535)
	deadline := time.Now().Add(10 * time.Second)
	for len(tags) < 2 && time.Now().Before(deadline) {
		caller.SetReadDeadline(deadline)
		n, _, err := caller.ReadFrom(buf)
		if err != nil {
			break
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "SIP/2.0 200") {
			continue
		}
		for _, tag := range []string{"fork1", "fork2"} {
			if strings.Contains(msg, "tag="+tag) {
				tags[tag] = true
			}
		}
	}
	if !tags["fork1"] || !tags["fork2"] {
		t.Fatalf("caller got 2xx from %v, want both forks", tags)
	}
	c, ok := r.p.Tracker().Get("fork-test-1")
	if !ok || c.State != dialog.Confirmed {
		t.Fatalf("tracked call = %+v, %v; want one confirmed call", c, ok)
	}
	if st := r.p.Stats(); st.Responses[200] < 2 || st.Panics != 0 {
		t.Errorf("stats = %+v", st)
	}
}
