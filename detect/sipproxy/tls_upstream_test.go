package sipproxy

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
)

// TestTLSUpstream: the phone on UDP, the edge reached over TLS with a
// certificate the agent trusts through its own pool (sip.tls.ca_file), not
// the system's; the agent listens for the edge on TLS too, so its
// Record-Route asks the edge for TLS. The call is answered and the edge
// hangs up: its BYE comes back over TLS and on to the phone, and the call
// is metered.
func TestTLSUpstream(t *testing.T) {
	cert, pool := selfSigned(t)
	r := &rig{t: t, ended: make(chan dialog.Call, 16), logs: &syncBuffer{}, cancelled: make(chan struct{}), calleeBye: make(chan error, 1)}
	// The edge trusts the agent's certificate, for the requests it sends
	// back to the agent's TLS listener.
	r.edge = newPeerAt(t, "edge", callee, "127.0.0.1", sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: pool}))
	r.phone = newPeer(t, "phone", line)
	tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	go r.edge.srv.ServeTLS(tl)
	edgeTLS := tl.Addr().(*net.TCPAddr).Port

	lines, _ := detect.NewLines([]string{line}, "1")
	p, err := New(Options{
		Listen:         []Endpoint{{"udp", "127.0.0.1", 0}},
		UpstreamListen: []Endpoint{{"udp", "127.0.0.1", 0}, {"tls", "127.0.0.1", 0}},
		Upstream:       Endpoint{"tls", "127.0.0.1", edgeTLS},
		TLS:            &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		Lines:          lines,
		Tracker:        dialog.New(dialog.Options{OnEnd: func(c dialog.Call) { r.ended <- c }}),
		Logger:         quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	runProxy(t, p)

	r.edge.setAnswer(func(s *sipgo.DialogServerSession, tx sip.ServerTransaction) {
		s.Respond(200, "OK", []byte(testSDP), sip.NewHeader("Content-Type", "application/sdp"))
		go func() {
			waitConfirmed(t, s)
			r.calleeBye <- s.Bye(context.Background())
		}()
	})
	s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	inv := r.edge.nth(sip.INVITE, 0)
	if inv.Transport() != "TLS" {
		t.Errorf("the INVITE reached the edge over %s, want TLS", inv.Transport())
	}
	if rr := inv.RecordRoute(); rr == nil || !strings.EqualFold(rr.Address.UriParams.GetOr("transport", ""), "tls") {
		t.Errorf("the edge's first Record-Route is %v, want the agent's TLS listener", rr)
	}
	if err := <-r.calleeBye; err != nil {
		t.Fatalf("the edge's BYE: %v", err)
	}
	r.phone.wantRequest(sip.BYE)
	if c := r.wantCall(); c.Disposition != dialog.Answered || c.Line != line {
		t.Errorf("call = %+v", c)
	}
}
