package sipproxy

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/internal/testcert"
)

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := testcert.New(t, "leadport-agent test", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	return c.Pair, c.Pool
}

// TestTLSListener: a phone reaches the proxy over TLS (a tls:// listener
// with a configured certificate), the proxy relays to the edge over UDP,
// and the call completes with the usage record.
func TestTLSListener(t *testing.T) {
	cert, pool := selfSigned(t)
	r := &rig{t: t, ended: make(chan dialog.Call, 16), logs: &syncBuffer{}, cancelled: make(chan struct{}), calleeBye: make(chan error, 1)}
	r.edge = newPeer(t, "edge", callee)
	r.phone = newPeerAt(t, "phone", line, "127.0.0.1", sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: pool}))
	lines, _ := detect.NewLines([]string{line}, "1")
	p, err := New(Options{
		Listen:   []Endpoint{{"udp", "127.0.0.1", 0}, {"tls", "127.0.0.1", 0}},
		Upstream: Endpoint{"udp", "127.0.0.1", r.edge.port},
		TLS:      &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Lines:    lines,
		Tracker:  dialog.New(dialog.Options{OnEnd: func(c dialog.Call) { r.ended <- c }}),
		Logger:   quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	runProxy(t, p)

	s, err := r.phone.invite(ctxT(t), line, callee, "tls", r.port("tls"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	inv := r.edge.nth(sip.INVITE, 0)
	if rr := inv.GetHeaders("Record-Route"); len(rr) != 2 {
		t.Errorf("edge got %d Record-Route entries, want 2 (tls in, udp out)", len(rr))
	}
	mustHangUp(t, s)
	r.edge.wantRequest(sip.BYE)
	if c := r.wantCall(); c.Disposition != dialog.Answered || c.Line != line {
		t.Errorf("call = %+v", c)
	}
}

func TestTLSListenerNeedsCertificate(t *testing.T) {
	_, err := New(Options{Listen: []Endpoint{{"tls", "127.0.0.1", 0}}, Upstream: Endpoint{"udp", "127.0.0.1", 5060}})
	if err == nil {
		t.Fatal("a tls listener without a certificate was accepted")
	}
}
