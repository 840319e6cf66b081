package sipproxy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
)

// FuzzProxyMessage sends each input as one UDP datagram to a running
// proxy, then asks the proxy itself for OPTIONS: it must never panic and
// must keep answering. The proxy, its upstream and the sockets are set up
// once per process and reused by every input.
//
//	go test ./detect/sipproxy -run '^$' -fuzz FuzzProxyMessage -fuzztime 60s
func FuzzProxyMessage(f *testing.F) {
	for _, seed := range tortureSeeds(f) {
		f.Add(seed)
	}
	for _, m := range wellFormed {
		f.Add([]byte(m))
	}
	fx := startFuzzProxy(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		before := fx.p.Stats().Panics
		if len(data) > 65000 {
			data = data[:65000] // one datagram
		}
		if _, err := fx.in.WriteTo(data, fx.addr); err != nil {
			t.Fatalf("send: %v", err)
		}
		if err := fx.ping(); err != nil {
			t.Fatalf("after %q: %v", data, err)
		}
		if n := fx.p.Stats().Panics; n != before {
			t.Fatalf("%d panics recovered while handling %q", n-before, data)
		}
	})
}

// FuzzBadRequest checks the 400 built for unparsable requests: none, or
// one whole response head that ends where the message ends (nothing of
// the input can end it early and smuggle a body or a second message).
func FuzzBadRequest(f *testing.F) {
	for _, seed := range tortureSeeds(f) {
		f.Add(seed)
	}
	for _, m := range wellFormed {
		f.Add([]byte(m))
	}
	f.Add([]byte("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:c@d>\r\nTo: x\r\r\n\r\n"))
	f.Add([]byte("INVITE sip:a@b SIP/2.0\nv: SIP/2.0/UDP h\nt: <sip:c@d>;tag=1\ni: x\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out := badRequest(data)
		if out == nil {
			return
		}
		if !bytes.HasPrefix(out, []byte("SIP/2.0 400 ")) {
			t.Fatalf("reply does not start with a 400 status line:\n%q", out)
		}
		if !bytes.HasSuffix(out, []byte("\r\n\r\n")) {
			t.Fatalf("reply does not end with an empty line:\n%q", out)
		}
		if i := bytes.Index(out, []byte("\r\n\r\n")); i != len(out)-4 {
			t.Fatalf("reply's header section ends at %d of %d:\n%q", i, len(out), out)
		}
	})
}

// tortureSeeds are the RFC 4475 messages of testdata/torture.
func tortureSeeds(f *testing.F) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "torture", "*", "*.dat"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no torture messages: %v", err)
	}
	var out [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// wellFormed are requests a phone would send: a call from the device's
// line, a registration through the proxy, a hang-up in a dialog.
var wellFormed = []string{
	"INVITE sip:" + callee + "@edge.invalid SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKfuzzinv1;rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:" + line + "@192.0.2.10>;tag=fz1\r\n" +
		"To: <sip:" + callee + "@edge.invalid>\r\n" +
		"Call-ID: fuzz-invite-1@192.0.2.10\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:" + line + "@192.0.2.10:5060>\r\n" +
		"Content-Type: application/sdp\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(testSDP)) + testSDP,
	"REGISTER sip:edge.invalid SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKfuzzreg1;rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:" + line + "@edge.invalid>;tag=fz2\r\n" +
		"To: <sip:" + line + "@edge.invalid>\r\n" +
		"Call-ID: fuzz-register-1@192.0.2.10\r\n" +
		"CSeq: 1 REGISTER\r\n" +
		"Contact: <sip:" + line + "@192.0.2.10:5060>;expires=3600\r\n" +
		"Content-Length: 0\r\n\r\n",
	"BYE sip:" + callee + "@192.0.2.20:5060 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKfuzzbye1;rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"Route: <sip:192.0.2.30;lr>\r\n" +
		"From: <sip:" + line + "@192.0.2.10>;tag=fz1\r\n" +
		"To: <sip:" + callee + "@edge.invalid>;tag=fz9\r\n" +
		"Call-ID: fuzz-invite-1@192.0.2.10\r\n" +
		"CSeq: 2 BYE\r\n" +
		"Content-Length: 0\r\n\r\n",
}

// fuzzProxy is a proxy with an edge upstream, and the two sockets the
// fuzz target talks to it from: in sends the inputs (and never reads),
// check asks OPTIONS.
type fuzzProxy struct {
	p     *Proxy
	addr  *net.UDPAddr
	in    net.PacketConn
	check net.PacketConn
	seq   int
	buf   []byte
}

func startFuzzProxy(f *testing.F) *fuzzProxy {
	f.Helper()
	edge := newPeer(f, "edge", callee)
	// A call the edge refuses leaves no dialog retransmitting a 2xx
	// behind every INVITE that gets through.
	edge.setAnswer(func(s *sipgo.DialogServerSession, _ sip.ServerTransaction) { s.Respond(486, "Busy Here", nil) })
	lines, _ := detect.NewLines([]string{line}, "1")
	p, err := New(Options{
		Listen:   []Endpoint{{"udp", "127.0.0.1", 0}, {"tcp", "127.0.0.1", 0}},
		Upstream: Endpoint{"udp", "127.0.0.1", edge.port},
		Lines:    lines,
		Logger:   quiet,
	})
	if err != nil {
		f.Fatal(err)
	}
	runProxy(f, p)
	fx := &fuzzProxy{p: p, addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p.Ports()["udp"]}, buf: make([]byte, 65535)}
	for _, c := range []*net.PacketConn{&fx.in, &fx.check} {
		if *c, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { (*c).Close() })
	}
	if err := fx.ping(); err != nil {
		f.Fatalf("the proxy does not answer before any input: %v", err)
	}
	return fx
}

// ping asks the proxy itself for OPTIONS and waits for its 200,
// retransmitting as a UDP client would.
func (fx *fuzzProxy) ping() error {
	fx.seq++
	id := fmt.Sprintf("fuzz-ping-%d", fx.seq)
	port := fx.addr.Port
	req := fmt.Sprintf("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bKping%d\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:ping@127.0.0.1>;tag=ping\r\n"+
		"To: <sip:127.0.0.1:%d>\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: %d OPTIONS\r\n"+
		"Content-Length: 0\r\n\r\n", port, fx.check.LocalAddr(), fx.seq, port, id, fx.seq)
	deadline := time.Now().Add(3 * time.Second)
	for try := 0; time.Now().Before(deadline); try++ {
		if _, err := fx.check.WriteTo([]byte(req), fx.addr); err != nil {
			return err
		}
		wait := time.Now().Add(100 * time.Millisecond << min(try, 3))
		if wait.After(deadline) {
			wait = deadline
		}
		fx.check.SetReadDeadline(wait)
		for {
			n, _, err := fx.check.ReadFrom(fx.buf)
			if err != nil {
				break // resend
			}
			res := fx.buf[:n]
			if !bytes.Contains(res, []byte(id)) {
				continue // an earlier ping's late answer
			}
			if !bytes.HasPrefix(res, []byte("SIP/2.0 200 ")) {
				return fmt.Errorf("OPTIONS to the proxy answered %q", strings.SplitN(string(res), "\r\n", 2)[0])
			}
			return nil
		}
	}
	return fmt.Errorf("OPTIONS to the proxy not answered within 3s")
}
