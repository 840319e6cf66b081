package sipproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// peer is a real SIP user agent (sipgo) on loopback, listening on UDP and
// TCP at the same port: a phone or PBX on the local side, or the Leadport
// edge upstream.
type peer struct {
	t    testing.TB
	name string
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	cli  *sipgo.Client
	port int
	host string
	dcc  *sipgo.DialogClientCache
	dsc  *sipgo.DialogServerCache
	tcp  net.Listener // closed by tests of a UDP-only peer

	// answer plays the callee's part for an initial INVITE; default: 200.
	answer func(s *sipgo.DialogServerSession, tx sip.ServerTransaction)
	// pathPolicy is the registrar's way with Path: "" echoes it in the 200
	// (RFC 3327), "ignore" leaves it out, "420" refuses it unless the
	// request announces Supported: path (kamailio's path_mode 2), "420
	// always" refuses any Path.
	pathPolicy string
	mu         sync.Mutex
	seen       map[sip.RequestMethod][]*sip.Request // every request received
	took       map[sip.RequestMethod]int            // how many wantRequest returned
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const testSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

func newPeer(t testing.TB, name, user string) *peer { return newPeerAt(t, name, user, "127.0.0.1") }

// newPeerAt starts a peer on host (127.0.0.1 or ::1).
func newPeerAt(t testing.TB, name, user, host string, uaOpts ...sipgo.UserAgentOption) *peer {
	t.Helper()
	p := &peer{t: t, name: name, host: host, seen: map[sip.RequestMethod][]*sip.Request{}, took: map[sip.RequestMethod]int{}}
	var err error
	p.ua, err = sipgo.NewUA(append([]sipgo.UserAgentOption{sipgo.WithUserAgent(name), sipgo.WithUserAgentHostname(host),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet))}, uaOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	p.srv, _ = sipgo.NewServer(p.ua, sipgo.WithServerLogger(quiet))
	udp, tcp := listenPair(t, host)
	p.port = udp.LocalAddr().(*net.UDPAddr).Port
	p.tcp = tcp
	p.cli, err = sipgo.NewClient(p.ua, sipgo.WithClientHostname(host), sipgo.WithClientLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: host, Port: p.port}}
	p.dcc = sipgo.NewDialogClientCache(p.cli, contact)
	p.dsc = sipgo.NewDialogServerCache(p.cli, contact)
	p.srv.OnInvite(p.onInvite)
	p.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		p.record(req)
		p.dsc.ReadAck(req, tx)
	})
	p.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		p.record(req)
		if err := p.dsc.ReadBye(req, tx); err == nil {
			return
		}
		if err := p.dcc.ReadBye(req, tx); err != nil {
			tx.Respond(sip.NewResponseFromRequest(req, 481, "No dialog", nil))
		}
	})
	p.srv.OnRegister(p.onRegister)
	p.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		p.record(req)
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	for _, m := range []sip.RequestMethod{sip.REFER, sip.MESSAGE, sip.INFO, sip.UPDATE, sip.NOTIFY, sip.SUBSCRIBE} {
		p.srv.OnRequest(m, func(req *sip.Request, tx sip.ServerTransaction) {
			p.record(req)
			tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		})
	}
	go p.srv.ServeUDP(udp)
	go p.srv.ServeTCP(tcp)
	t.Cleanup(func() {
		udp.Close()
		tcp.Close()
		p.ua.Close()
	})
	return p
}

// listenPair binds UDP and TCP on one free loopback port.
func listenPair(t testing.TB, host string) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", u.LocalAddr().String())
		if err == nil {
			return u, l
		}
		u.Close()
	}
	t.Fatal("no free port pair")
	return nil, nil
}

func (p *peer) record(req *sip.Request) {
	p.mu.Lock()
	p.seen[req.Method] = append(p.seen[req.Method], req)
	p.mu.Unlock()
}

func (p *peer) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	p.record(req)
	if hasToTag(req) {
		// re-INVITE
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(testSDP))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		tx.Respond(res)
		return
	}
	s, err := p.dsc.ReadInvite(req, tx)
	if err != nil {
		tx.Respond(sip.NewResponseFromRequest(req, 500, "test peer", nil))
		return
	}
	p.mu.Lock()
	answer := p.answer
	p.mu.Unlock()
	if answer != nil {
		answer(s, tx)
	} else {
		s.Respond(180, "Ringing", nil)
		s.Respond(200, "OK", []byte(testSDP), sip.NewHeader("Content-Type", "application/sdp"))
	}
	select {
	case <-tx.Done():
	case <-time.After(35 * time.Second):
	}
}

// onRegister is a registrar: it binds the request's contacts and answers
// with them.
func (p *peer) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	p.record(req)
	p.mu.Lock()
	policy := p.pathPolicy
	p.mu.Unlock()
	if req.GetHeader("Path") != nil && (policy == "420 always" || policy == "420" && !headerHasTag(req, "Supported", "path")) {
		res := sip.NewResponseFromRequest(req, 420, "Bad Extension", nil)
		res.AppendHeader(sip.NewHeader("Unsupported", "path"))
		tx.Respond(res)
		return
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	if policy != "ignore" {
		for _, h := range req.GetHeaders("Path") {
			res.AppendHeader(sip.HeaderClone(h))
		}
	}
	for _, h := range req.GetHeaders("Contact") {
		c := h.(*sip.ContactHeader).Clone()
		if _, ok := c.Params.Get("expires"); !ok {
			c.Params.Add("expires", "3600")
		}
		res.AppendHeader(c)
	}
	tx.Respond(res)
}

// wantRequest waits for the next request of method the peer receives.
func (p *peer) wantRequest(method sip.RequestMethod) *sip.Request {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		if i := p.took[method]; i < len(p.seen[method]) {
			p.took[method]++
			r := p.seen[method][i]
			p.mu.Unlock()
			return r
		}
		p.mu.Unlock()
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no %s within 10s", p.name, method)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// setAnswer sets how the peer answers INVITEs.
func (p *peer) setAnswer(f func(s *sipgo.DialogServerSession, tx sip.ServerTransaction)) {
	p.mu.Lock()
	p.answer = f
	p.mu.Unlock()
}

// nth waits for the i-th request of method the peer received (from 0).
func (p *peer) nth(method sip.RequestMethod, i int) *sip.Request {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		if i < len(p.seen[method]) {
			r := p.seen[method][i]
			p.mu.Unlock()
			return r
		}
		p.mu.Unlock()
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no %s #%d within 10s", p.name, method, i)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// invite starts a call from this peer through the proxy at proxyPort.
func (p *peer) invite(ctx context.Context, from, to string, transport string, proxyPort int, extra ...sip.Header) (*sipgo.DialogClientSession, error) {
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: to, Host: "edge.invalid"})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: from, Host: p.host}, Params: tagParams()})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: to, Host: "edge.invalid"}})
	req.AppendHeader(sip.NewHeader("Route", fmt.Sprintf("<sip:%s;transport=%s;lr>", net.JoinHostPort(p.host, strconv.Itoa(proxyPort)), transport)))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: from, Host: p.host, Port: p.port,
		UriParams: sip.HeaderParams{{K: "transport", V: transport}}}})
	for _, h := range extra {
		req.AppendHeader(h)
	}
	req.SetBody([]byte(testSDP))
	req.SetTransport(strings.ToUpper(transport))
	return p.dcc.WriteInvite(ctx, req)
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

func tagParams() sip.HeaderParams {
	ps := sip.NewParams()
	ps.Add("tag", sip.GenerateTagN(10))
	return ps
}
