package sipproxy

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// scanFrom is the address tests send as an unknown source from: loopback,
// but outside the one trusted network of gateRig.
const scanFrom = "127.0.0.2"

// gateRig is the proxy between a phone and an edge on 127.0.0.1, which is
// all it trusts; an unknown source sends raw datagrams from scanFrom.
type gateRig struct {
	*rig
	mu      sync.Mutex
	reports []ScanReport
	clock   atomic.Int64 // unix ns; 0: the real clock
}

func newGateRig(t *testing.T, sec Security) *gateRig {
	t.Helper()
	return newGateRigWith(t, sec, nil)
}

func newGateRigWith(t *testing.T, sec Security, mod func(*Options)) *gateRig {
	t.Helper()
	g := &gateRig{}
	if sec.Trusted == nil {
		sec.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}
	g.rig = newRig(t, "udp", func(o *Options, _ *rig) {
		o.Security = sec
		o.OnScan = func(r ScanReport) {
			g.mu.Lock()
			g.reports = append(g.reports, r)
			g.mu.Unlock()
		}
		o.Now = func() time.Time {
			if ns := g.clock.Load(); ns != 0 {
				return time.Unix(0, ns)
			}
			return time.Now()
		}
		if mod != nil {
			mod(o)
		}
	})
	return g
}

// challenger is a registrar that refuses every REGISTER with a digest
// challenge, as the edge does to a scanner without the password.
type challenger struct {
	port      int
	registers atomic.Int64
}

func newChallenger(t *testing.T) *challenger {
	t.Helper()
	c := &challenger{}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("registrar"), sipgo.WithUserAgentHostname("127.0.0.1"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		c.registers.Add(1)
		res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", `Digest realm="edge", nonce="abc"`))
		tx.Respond(res)
	})
	udp, tcp := listenPair(t, "127.0.0.1")
	c.port = udp.LocalAddr().(*net.UDPAddr).Port
	go srv.ServeUDP(udp)
	t.Cleanup(func() { udp.Close(); tcp.Close(); ua.Close() })
	return c
}

func (g *gateRig) scanReports() []ScanReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]ScanReport(nil), g.reports...)
}

// source is an unknown UDP source.
type source struct {
	t testing.TB
	c *net.UDPConn
	n int
}

func newSource(t testing.TB, from string, proxyPort int) *source {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: proxyPort})
	if err != nil {
		t.Skipf("cannot send from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return &source{t: t, c: c}
}

// request builds a request as sipvicious does; pad bytes of an extra
// header make it larger than the answers it gets.
func (s *source) request(method, user string, pad int) string {
	s.n++
	la := s.c.LocalAddr().(*net.UDPAddr)
	uri := "sip:" + user + "@127.0.0.1"
	if method == "REGISTER" {
		uri = "sip:127.0.0.1"
	}
	return fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-gate%d-%d;rport\r\nMax-Forwards: 70\r\n"+
		"To: \"%s\" <sip:%s@127.0.0.1>\r\nFrom: \"%s\" <sip:%s@127.0.0.1>;tag=gate%d\r\nUser-Agent: friendly-scanner\r\n"+
		"Call-ID: gate-%d-%d\r\nContact: <sip:%s@%s>\r\nCSeq: 1 %s\r\nX-Pad: %s\r\nContent-Length: 0\r\n\r\n",
		method, uri, la.String(), la.Port, s.n, user, user, user, user, s.n, la.Port, s.n, user, la.String(), method, strings.Repeat("p", pad))
}

func (s *source) send(msg string) {
	s.t.Helper()
	if _, err := s.c.Write([]byte(msg)); err != nil {
		s.t.Fatal(err)
	}
}

// recv returns the next datagram, or "" after wait.
func (s *source) recv(wait time.Duration) string {
	s.c.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, 65535)
	n, err := s.c.Read(b)
	if err != nil {
		return ""
	}
	return string(b[:n])
}

// answer returns the next response to a request of method, passing over
// others (the agent retransmits its 403 to an INVITE never ACKed), or ""
// after wait.
func (s *source) answer(method string, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		msg := s.recv(time.Until(deadline))
		if msg == "" || strings.Contains(msg, " "+method+"\r\n") {
			return msg
		}
	}
}

// status is the status code of a response, 0 for anything else.
func status(msg string) int {
	var code int
	if _, err := fmt.Sscanf(msg, "SIP/2.0 %d", &code); err != nil {
		return 0
	}
	return code
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *peer) count(method sip.RequestMethod) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.seen[method])
}

func block() Security {
	return Security{Mode: SecurityBlock, RequestsPerS: 1000, Burst: 1000, MaxAuthFailures: 3, Penalty: time.Minute}
}

// TestGateUnknownSources: from a source it does not know, the agent
// relays REGISTERs only, answers OPTIONS itself and the rest 403, while
// the same INVITE from a trusted source is relayed; once the source holds
// a registration, it is known and its INVITEs are relayed too.
func TestGateUnknownSources(t *testing.T) {
	g := newGateRig(t, block())
	port := g.port("udp")

	// The thing is there: a trusted phone's call reaches the edge.
	s, err := g.phone.invite(ctxT(t), line, callee, "udp", port)
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	mustHangUp(t, s)
	if g.edge.count(sip.INVITE) != 1 {
		t.Fatalf("edge got %d INVITEs from the trusted phone, want 1", g.edge.count(sip.INVITE))
	}

	src := newSource(t, scanFrom, port)
	for _, tt := range []struct {
		method string
		want   int
	}{
		{"INVITE", 403},
		{"MESSAGE", 403},
		{"SUBSCRIBE", 403},
		{"OPTIONS", 200},
	} {
		src.send(src.request(tt.method, "100", 600))
		if got := status(src.recv(5 * time.Second)); got != tt.want {
			t.Errorf("%s from an unknown source: answered %d, want %d", tt.method, got, tt.want)
		}
	}
	if n, o := g.edge.count(sip.INVITE), g.edge.count(sip.OPTIONS); n != 1 || o != 0 {
		t.Errorf("edge got %d INVITEs and %d OPTIONS, want only the trusted phone's INVITE", n, o)
	}
	if st := g.p.Stats().Security; st.Refused != 3 || st.Relayed != 0 || st.Sources != 1 {
		t.Errorf("stats %+v, want 3 refused, nothing relayed, 1 source", st)
	}
	// A report: refused requests, the tool's User-Agent, masked source.
	waitFor(t, "a scan report", func() bool { return len(g.scanReports()) > 0 })
	r := g.scanReports()[0]
	if r.Source != "127.0.0.0/24" || r.SourceID == "" || r.UserAgent != "friendly-scanner" || !r.Enforced {
		t.Errorf("report %+v: want the /24, an id, the user agent, enforced", r)
	}
	if !contains(r.Reasons, "scanner_user_agent") || !contains(r.Reasons, "refused") {
		t.Errorf("report reasons %v, want scanner_user_agent and refused", r.Reasons)
	}

	// The registration flow is relayed; the registrar accepts, and the
	// source is known from then on.
	src.send(src.request("REGISTER", line, 600))
	if got := status(src.answer("REGISTER", 5*time.Second)); got != 200 {
		t.Fatalf("REGISTER from an unknown source: answered %d, want the registrar's 200", got)
	}
	src.send(src.request("INVITE", callee, 600))
	g.edge.nth(sip.INVITE, 1)
	if st := g.p.Stats().Security; st.Relayed != 1 || st.Sources != 0 || st.Refused != 3 {
		t.Errorf("stats after the registration %+v, want 1 relayed, the source gone from the table", st)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestGateRate: an unknown source is answered no faster than its bucket
// allows; the rest is dropped without an answer.
func TestGateRate(t *testing.T) {
	sec := block()
	sec.RequestsPerS, sec.Burst = 0.001, 5
	g := newGateRig(t, sec)
	src := newSource(t, scanFrom, g.port("udp"))
	for range 20 {
		src.send(src.request("OPTIONS", "", 600))
	}
	answers := 0
	for status(src.recv(time.Second)) == 200 {
		answers++
	}
	if answers != 5 {
		t.Errorf("%d answers to 20 OPTIONS with a burst of 5, want 5", answers)
	}
	st := g.p.Stats().Security
	if st.Dropped != 15 {
		t.Errorf("dropped %d, want 15", st.Dropped)
	}
	if st.BytesOut > st.BytesIn || st.BytesOut == 0 {
		t.Errorf("sent %d bytes to the source for %d received", st.BytesOut, st.BytesIn)
	}
}

// TestGateAmplification: an answer larger than what the source sent is
// held back; padded, the same request is answered.
func TestGateAmplification(t *testing.T) {
	g := newGateRig(t, block())
	src := newSource(t, scanFrom, g.port("udp"))
	small := "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP " + scanFrom + ";branch=z9hG4bK-a1;rport\r\nTo: <sip:127.0.0.1>\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: a1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	src.send(small)
	if got := src.recv(time.Second); got != "" {
		t.Fatalf("a %d-byte request got a %d-byte answer:\n%s", len(small), len(got), got)
	}
	st := g.p.Stats().Security
	if st.HeldBytes == 0 || st.BytesOut != 0 {
		t.Errorf("stats %+v, want bytes held and none sent", st)
	}
	src.send(src.request("OPTIONS", "", 800))
	if got := status(src.recv(5 * time.Second)); got != 200 {
		t.Errorf("padded OPTIONS answered %d, want 200", got)
	}
	if st := g.p.Stats().Security; st.BytesOut > st.BytesIn {
		t.Errorf("sent %d bytes for %d received", st.BytesOut, st.BytesIn)
	}
}

// TestGatePenalty: registrations refused upstream penalise their source
// (fail2ban): after MaxAuthFailures nothing more of it is relayed or
// answered.
func TestGatePenalty(t *testing.T) {
	sec := block()
	sec.ReportEvery = time.Millisecond // every sweep reports what is new
	registrar := newChallenger(t)
	g := newGateRigWith(t, sec, func(o *Options) { o.Upstream = Endpoint{"udp", "127.0.0.1", registrar.port} })
	src := newSource(t, scanFrom, g.port("udp"))
	for i := range 3 {
		src.send(src.request("REGISTER", fmt.Sprint(100+i), 600))
		if got := status(src.recv(5 * time.Second)); got != 401 {
			t.Fatalf("REGISTER %d answered %d, want the edge's 401", i, got)
		}
	}
	for i := range 3 {
		src.send(src.request("REGISTER", fmt.Sprint(200+i), 600))
		src.send(src.request("OPTIONS", "", 600))
	}
	if got := src.recv(500 * time.Millisecond); got != "" {
		t.Errorf("a penalised source was answered: %q", got)
	}
	if n := registrar.registers.Load(); n != 3 {
		t.Errorf("edge got %d REGISTERs, want 3", n)
	}
	st := g.p.Stats().Security
	if st.Penalised != 1 || st.AuthFailures != 3 || st.Dropped != 6 {
		t.Errorf("stats %+v, want 1 penalty after 3 failures, 6 dropped", st)
	}
	waitFor(t, "a report naming the penalty", func() bool {
		for _, r := range g.scanReports() {
			if contains(r.Reasons, "penalty") && !r.PenaltyUntil.IsZero() {
				return true
			}
		}
		return false
	})
}

// TestGateReportsOncePerWindow: a source is reported at the sweep after it
// first trips, then at most once per window with the counts of the window.
func TestGateReportsOncePerWindow(t *testing.T) {
	sec := block()
	sec.ReportEvery = time.Hour
	g := newGateRig(t, sec)
	start := time.Now()
	g.clock.Store(start.UnixNano())
	src := newSource(t, scanFrom, g.port("udp"))
	invites := func(n, from int) {
		for i := range n {
			src.send(src.request("INVITE", fmt.Sprint(from+i), 600))
			if got := status(src.recv(5 * time.Second)); got != 403 {
				t.Fatalf("INVITE %d answered %d, want 403", i, got)
			}
		}
	}
	invites(10, 100)
	g.p.gateSweep(start)
	r := g.scanReports()
	if len(r) != 1 || r[0].Requests != 10 || r[0].Refused != 10 || r[0].ToUsers != 10 {
		t.Fatalf("%d reports after 10 refusals, want 1 of them all: %+v", len(r), r)
	}
	invites(5, 100) // the same users again
	g.p.gateSweep(start.Add(59 * time.Minute))
	if r := g.scanReports(); len(r) != 1 {
		t.Fatalf("%d reports within the window, want 1", len(r))
	}
	g.p.gateSweep(start.Add(time.Hour))
	r = g.scanReports()
	if len(r) != 2 {
		t.Fatalf("%d reports once the window passed, want 2", len(r))
	}
	if r[1].Requests != 5 || r[1].Refused != 5 || r[1].ToUsers != 5 || r[1].Methods["INVITE"] != 5 || r[1].UserAgent != "friendly-scanner" {
		t.Errorf("second report %+v, want the window's 5 INVITEs to 5 users", r[1])
	}
	g.p.gateSweep(start.Add(3 * time.Hour))
	if r := g.scanReports(); len(r) != 2 {
		t.Errorf("%d reports with nothing new, want 2", len(r))
	}
}

// TestGateObserve: in observe mode the unknown source's INVITE is relayed
// as before, and still counted and reported.
func TestGateObserve(t *testing.T) {
	sec := block()
	sec.Mode = SecurityObserve
	g := newGateRig(t, sec)
	src := newSource(t, scanFrom, g.port("udp"))
	src.send(src.request("INVITE", callee, 600))
	g.edge.wantRequest(sip.INVITE)
	waitFor(t, "a report", func() bool { return len(g.scanReports()) == 1 })
	if r := g.scanReports()[0]; r.Enforced || r.Refused != 1 {
		t.Errorf("report %+v, want observed, 1 request that would be refused", r)
	}
}

// TestGateTCP: a stream source is limited per request.
func TestGateTCP(t *testing.T) {
	sec := block()
	sec.RequestsPerS, sec.Burst = 0.001, 2
	g := newGateRig(t, sec)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(scanFrom)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.port("tcp")))
	if err != nil {
		t.Skipf("cannot connect from %s: %v", scanFrom, err)
	}
	defer c.Close()
	la := c.LocalAddr().String()
	for i := range 4 {
		msg := fmt.Sprintf("INVITE sip:%d@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK-t%d\r\nMax-Forwards: 70\r\nTo: <sip:%d@127.0.0.1>\r\n"+
			"From: <sip:s@127.0.0.2>;tag=t%d\r\nCall-ID: tcp-%d\r\nCSeq: 1 INVITE\r\nUser-Agent: sipcli/v1.8\r\nContent-Length: 0\r\n\r\n", 100+i, la, i, 100+i, i, i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var got strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if n := strings.Count(got.String(), "SIP/2.0 403"); n != 2 {
		t.Errorf("%d answers 403 to 4 INVITEs over TCP with a burst of 2, want 2:\n%s", n, got.String())
	}
	if g.edge.count(sip.INVITE) != 0 {
		t.Error("an unknown source's INVITE over TCP was relayed")
	}
	waitFor(t, "a report", func() bool { return len(g.scanReports()) > 0 })
	if r := g.scanReports()[0]; r.UserAgent != "sipcli/v1.8" || !contains(r.Reasons, "scanner_user_agent") {
		t.Errorf("report %+v, want sipcli's user agent", r)
	}
}
