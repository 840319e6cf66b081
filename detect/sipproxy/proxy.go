// Package sipproxy is the agent's place in the signalling path: a
// transaction-stateful SIP proxy (RFC 3261 section 16) on emiago/sipgo
// between the device's user agents (a PBX trunk, registering phones) and
// the Leadport edge. It relays every call, tracks the calls of the device's
// lines, and passes each request that starts or changes something, and each
// response from the local side, through one decision function that lets it
// through or answers it itself.
package sipproxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/store/phone"
)

// Endpoint is a SIP transport address.
type Endpoint struct {
	Transport string // udp, tcp or tls
	Host      string
	Port      int
}

func (e Endpoint) IsZero() bool { return e.Host == "" }

// Addr is host:port, with brackets for IPv6.
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

func (e Endpoint) String() string { return e.Transport + "://" + e.Addr() }

// RegisterMode is how calls find their way back to phones registering
// through the agent.
type RegisterMode string

const (
	// RegisterPath adds a Path header (RFC 3327): the registrar routes
	// calls for the contact through the agent.
	RegisterPath RegisterMode = "path"
	// RegisterContact rewrites each Contact to an address of the agent, for
	// registrars without Path support; the agent maps it back.
	RegisterContact RegisterMode = "contact"
)

// Options configure a Proxy.
type Options struct {
	// Listen is where the local side (PBX, phones) sends SIP.
	Listen []Endpoint
	// UpstreamListen is where the Leadport edge sends SIP; empty: the same
	// sockets as Listen, and a message's side is told by its source.
	UpstreamListen []Endpoint
	// Advertise is the host put in Via, Record-Route and Path when a
	// listener is bound to a wildcard address; default: the address the
	// host would use to reach the upstream.
	Advertise string
	// Upstream is the Leadport edge; required.
	Upstream Endpoint
	// Local is where inbound calls go (a PBX trunk); zero: the contacts
	// registered through the agent, or the Request-URI.
	Local        Endpoint
	RegisterMode RegisterMode
	TLS          *tls.Config // for tls listeners and next hops

	// MaxPending bounds the initial requests in progress (waiting for
	// their final response); past it new ones get 503 with Retry-After so
	// that a call storm costs a bounded amount of memory and the calls in
	// progress keep being served. Default 2,000.
	MaxPending int
	// MaxUnanswered bounds the new requests in the works: admitted and
	// waiting for a work slot, read and not yet relayed, or relayed and not
	// yet answered at all (not even 100 Trying) by the next hop. Past it
	// new ones get 503 with Retry-After.
	// It is the window that keeps an overloaded proxy's queue, and the
	// collector's work on it, short (docs/sip.md, "Admission control").
	// Default 64.
	MaxUnanswered int
	// MemoryBudget is the memory the process may use, in bytes: once live
	// objects and goroutine stacks fill 60 % of it, new requests get 503
	// with Retry-After (see admit.go). 0: no memory check.
	MemoryBudget int64
	// MaxQueueDelay is the longest a new request may wait in a UDP
	// socket's buffer and still be taken on (admission control's "queue"
	// reason); default 100 ms.
	MaxQueueDelay time.Duration
	// OnBacklog is called, at most every 10 ms, while goroutines wait for
	// a CPU; it must not block. The agent gives the Go scheduler back the
	// processors it took away from an idle agent, so a burst of calls on a
	// quiet device is not refused for lack of them.
	OnBacklog func()

	Lines   *detect.Lines
	Decider detect.Decider // default detect.AllowAll
	// Signer vouches for the outbound calls the rules let through (an
	// Identity header); nil: calls go out unsigned.
	Signer detect.CallSigner
	// Recorded returns, for a call that ended, a channel closed once its
	// usage record is durable, or nil. The 2xx to a BYE is relayed once it
	// is closed (or after DurableWait), so a call its caller saw end is
	// never lost to a crash of the agent. nil: no wait.
	Recorded func(callID string) <-chan struct{}
	// DurableWait bounds that wait; default 2 s. A store that cannot keep
	// up slows the BYE's answer by at most this much, never the call.
	DurableWait time.Duration
	Tracker     *dialog.Tracker
	Logger      *slog.Logger
	// Now is the clock for call times; default time.Now.
	Now func() time.Time
	// Security limits the sources the proxy does not know (gate.go);
	// zero: off. OnScan is told of each source reported (nil: counted
	// only).
	Security Security
	OnScan   func(ScanReport)

	// testHook, when set by a test, runs first for every request.
	testHook func(*sip.Request)
	// windowGrace, when set by a test, replaces windowGrace; negative:
	// none, the window refuses as soon as it is full.
	windowGrace time.Duration
	// workSlots, when set by a test, replaces workSlots().
	workSlots int
}

// Proxy relays SIP between the local side and the upstream.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	local   *side
	up      *side // == local when the sides share sockets
	split   bool
	lines   atomic.Pointer[detect.Lines]
	decider atomic.Pointer[deciderBox]
	tracker *dialog.Tracker
	regs    *registrations
	c       counters

	pending atomic.Int64 // initial requests awaiting a final response
	// unanswered: new requests being worked on or awaiting the next hop's
	// first answer (Options.MaxUnanswered)
	unanswered atomic.Int64
	window     window  // decides on unanswered
	transit    transit // new requests admitted and on their way to a work slot
	busy       window  // decides on the requests waiting at the work gate
	admit      *admission
	work       *workGate                // bounds the requests worked on at once
	upAddrs    atomic.Pointer[[]net.IP] // upstream host, resolved
	// udpOnlyUntil (unix ns) is set when the upstream refused TCP for a
	// large request: until then such requests go over UDP directly.
	udpOnlyUntil atomic.Int64
	// pathRefused is set once the registrar has refused or ignored a Path:
	// registrations go in contact mode from then on (registerAnswered).
	pathRefused atomic.Bool
	ready       chan struct{}
	gate        gate     // per-source limits (gate.go)
	answers     *answers // final answers kept for retransmissions (answered.go)
}

type deciderBox struct{ d detect.Decider }

// side is one sipgo user agent with its listeners: the local side and, when
// configured apart, the upstream side.
type side struct {
	name    string
	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	client  *sipgo.Client
	listen  []Endpoint
	host    string         // advertised
	ports   map[string]int // transport -> listening port
	slots   sync.Map       // local addr string -> *udpSlot, for 400s
	udpAddr sip.Addr       // the first UDP listener's bound address
}

func init() {
	// sipgo's settings are package globals, read by every transaction and
	// transport in the process; they are set before any exists.
	//
	// sipgo refuses UDP messages over 1300 bytes. Requests that size go
	// over TCP as RFC 3261 18.1.1 says (see relay); a response must go back
	// the way its request came, so UDP responses of any size are sent and
	// left to IP fragmentation rather than failing the call.
	sip.UDPMTUSize = 65535
	SetTransactionLinger(DefaultTransactionLinger)
	sip.Timer_D, sip.Timer_K = 2*time.Second, 2*time.Second
	// A request whose next hop does not answer at all (a BYE, above all;
	// or an INVITE without even a 100) is given up after 8 s rather than
	// 64*T1 = 32 s, and its sender answered 408. Its goroutine and
	// transactions, about 20 KB, are held meanwhile: when an overloaded
	// UAS gave up its calls and no longer answered their BYEs, 32 s of
	// them at 1,700 calls/s were half a gigabyte. The sender's own
	// transaction gives up at 32 s; a UAC takes any final answer to its
	// BYE as the end of the call. sipgo 1.7.4 times out every client
	// transaction by Timer B (Timer F is declared, not used); an INVITE
	// that had a provisional answer is no longer subject to it.
	sip.Timer_B, sip.Timer_F = 8*time.Second, 8*time.Second
}

// DefaultTransactionLinger is how long the final answer to a UDP request
// is kept after it was sent, to answer retransmissions; see
// SetTransactionLinger.
const DefaultTransactionLinger = 100 * time.Millisecond

// SetTransactionLinger sets, for the whole process, how long the final
// answer to a request that came over UDP is kept to answer its
// retransmissions (answered.go). Call it once, before any proxy runs.
//
// RFC 3261 keeps server transactions 32 s for this; kamailio's tm 5 s
// (wait_timer). A retransmission only comes after the final answer when
// that answer was lost on the way (a request answered slower than T1 is
// retransmitted while its transaction is still in progress), which on the
// LAN or loopback the agent sits on is rare. One that comes after the
// linger is relayed again as a new transaction: the next hop answers it
// from its own, or with 481 for a BYE whose dialog is gone, and the sender
// takes either as the end; the rules count an INVITE with the Call-ID of
// the line's newest attempt once. Later 2xx retransmissions are relayed
// statelessly (strayResponse, RFC 6026).
//
// sipgo's own transactions end as soon as their final answer is out
// (Timers J, L and I are 0): kept for the linger, each held its request
// and answer, several KB with sipgo's message objects, and ended by a
// timer that woke the runtime (answered.go says what that cost). A
// failure answer to an INVITE still keeps its transaction until the ACK
// (Timers G and H), as it must. Timer D (INVITE client after a failure
// answer) is moot: client transactions end once their final answer is
// relayed, the ACK for a failure already sent; it is cut to 2 s all the
// same, and so is Timer K (non-INVITE client, which sipgo 1.7.4 uses where
// 1.7.3 used Timer D).
//
// Timer M (INVITE client transaction after its first 2xx) is 0 as well,
// and that has a price. sipgo hands each response to its transaction on a
// goroutine of its own and Terminate does not stop Timer M, so a 2xx of
// another fork that reaches the transaction within microseconds of the
// first can find it already ended, and sipgo drops it there; one arriving
// any later finds no transaction and is relayed (strayResponse). The UAS
// retransmits its 2xx until the ACK (RFC 3261 13.3.1.4), so the dropped
// one reaches the caller T1 (500 ms) later (TestForkedAnswers). A Timer M
// of 100 ms closed that gap but fired in an idle process once a call: 28.5
// and 28.8 context switches a call at 100 calls/s against 23.8 and 24.5
// (scripts/bench-idle.sh, two interleaved pairs), for a race between two
// UASs answering in the same instant.
//
// The agent's branches stay random. Deriving them from the incoming
// request, as a stateless proxy does so that a late retransmission reuses
// its branch, crashed sipgo 1.7.3 under load: a late answer to the earlier
// transaction reached a new one with the same key while it was in the map
// but not yet started, and its state machine was nil.
func SetTransactionLinger(d time.Duration) {
	lingerNs.Store(int64(d))
	sip.Timer_J, sip.Timer_L, sip.Timer_I, sip.Timer_M = 0, 0, 0, 0
}

// udpBuffer is the socket buffer asked for each UDP listener: a burst of
// calls (a PBX re-registering every phone after a restart) must not
// overflow the kernel's default 208 KB.
const udpBuffer = 4 << 20

// New checks the options and builds the proxy; Run starts it.
func New(opts Options) (*Proxy, error) {
	if len(opts.Listen) == 0 {
		return nil, errors.New("sipproxy: no listen address")
	}
	if opts.Upstream.IsZero() {
		return nil, errors.New("sipproxy: no upstream")
	}
	if opts.RegisterMode == "" {
		opts.RegisterMode = RegisterPath
	}
	if opts.Decider == nil {
		opts.Decider = detect.AllowAll
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DurableWait <= 0 {
		opts.DurableWait = 2 * time.Second
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 2000
	}
	if opts.MaxUnanswered <= 0 {
		opts.MaxUnanswered = 64
	}
	if opts.MaxQueueDelay <= 0 {
		opts.MaxQueueDelay = maxSojourn
	}
	if opts.Tracker == nil {
		opts.Tracker = dialog.New(dialog.Options{})
	}
	if opts.Lines == nil {
		opts.Lines, _ = detect.NewLines(nil, "")
	}
	for _, e := range append(append([]Endpoint{}, opts.Listen...), opts.UpstreamListen...) {
		if e.Transport == "tls" && opts.TLS == nil {
			return nil, fmt.Errorf("sipproxy: %s needs a TLS certificate", e)
		}
	}
	p := &Proxy{
		opts: opts,
		// Masked whatever logger the caller gave: the proxy handles numbers
		// in every message, and its logs must never carry one whole.
		log:     slog.New(phone.NewMaskingHandler(opts.Logger.Handler())).With("component", "sip"),
		now:     opts.Now,
		tracker: opts.Tracker,
		regs:    newRegistrations(),
		answers: newAnswers(),
		admit:   newAdmission(opts.MemoryBudget, opts.OnBacklog),
		work:    newWorkGate(cmp.Or(opts.workSlots, workSlots())),
		ready:   make(chan struct{}),
	}
	p.window.size, p.window.grace, p.window.hold = int64(opts.MaxUnanswered), windowGrace, windowHold
	p.busy.size, p.busy.grace, p.busy.hold = shedWaiting, windowGrace, windowHold
	if opts.windowGrace != 0 {
		p.window.grace = max(opts.windowGrace, 0)
		p.busy.grace = p.window.grace
	}
	p.lines.Store(opts.Lines)
	p.decider.Store(&deciderBox{opts.Decider})
	var err error
	if p.local, err = p.newSide("local", opts.Listen); err != nil {
		return nil, err
	}
	p.up = p.local
	if len(opts.UpstreamListen) > 0 {
		p.split = true
		if p.up, err = p.newSide("upstream", opts.UpstreamListen); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// SetDecider replaces the decision function for new requests; calls in
// progress keep going.
func (p *Proxy) SetDecider(d detect.Decider) {
	if d == nil {
		d = detect.AllowAll
	}
	p.decider.Store(&deciderBox{d})
}

// SetLines replaces the device's lines for new requests.
func (p *Proxy) SetLines(l *detect.Lines) { p.lines.Store(l) }

// Tracker is the call tracker the proxy feeds.
func (p *Proxy) Tracker() *dialog.Tracker { return p.tracker }

// Ready is closed once every listener is bound.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	s := p.c.snapshot()
	s.Pending = p.pending.Load()
	s.Unanswered = p.unanswered.Load() + p.transit.load(time.Now().UnixNano())
	s.InHand = p.inHand()
	s.Held = p.admit.held.Load()
	s.Runnable = p.admit.runnable.Load()
	s.Waiting, s.WaitingTop = p.work.waiting.Load(), p.work.top.Load()
	s.MemoryBudget = p.admit.budget.Load()
	ts := p.tracker.Stats()
	s.CallsActive, s.CallsTotal, s.CallsOverflow = ts.Active, ts.Total, ts.Overflow
	s.Registrations = p.regs.count(p.now())
	s.AnswersKept = p.answers.len()
	return s
}

// RegisterResults returns the registrar's last final answer per line.
func (p *Proxy) RegisterResults() map[string]RegisterResult { return p.regs.resultsSnapshot() }

// RegisterModeInForce is the register mode used now: the configured one,
// or contact once the registrar refused or ignored a Path.
func (p *Proxy) RegisterModeInForce() RegisterMode { return p.registerMode() }

// Registrations returns the contacts bound per line through the agent.
func (p *Proxy) Registrations() map[string][]Binding { return p.regs.snapshot(p.now()) }

func (p *Proxy) newSide(name string, listen []Endpoint) (*side, error) {
	s := &side{name: name, listen: listen, ports: map[string]int{}}
	libLog := slog.New(redactHandler{next: p.log.Handler(), onParseError: func(data string) { p.parseFailed(s, data) }}).With("side", name)
	s.host = bareHost(p.opts.Advertise)
	if s.host == "" {
		s.host = advertiseHost(listen[0].Host, p.opts.Upstream.Host)
	}
	var err error
	s.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent("leadport-agent"),
		sipgo.WithUserAgentHostname(s.host),
		sipgo.WithUserAgenTLSConfig(p.opts.TLS),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(libLog),
			sip.WithTransactionLayerUnhandledResponseHandler(func(res *sip.Response) { p.strayResponse(s, res) }),
		),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(libLog),
			sip.WithTransportLayerReadFilter(func(info sip.TransportReadProps, data []byte) ([]byte, error) {
				return p.readFilter(s, info, data), nil
			}),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("sipproxy: %s user agent: %w", name, err)
	}
	if s.srv, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(libLog)); err != nil {
		return nil, fmt.Errorf("sipproxy: %s server: %w", name, err)
	}
	if s.client, err = sipgo.NewClient(s.ua, sipgo.WithClientHostname(s.host), sipgo.WithClientLogger(libLog)); err != nil {
		return nil, fmt.Errorf("sipproxy: %s client: %w", name, err)
	}
	handle := func(req *sip.Request, tx sip.ServerTransaction) { p.handle(s, req, tx) }
	for _, m := range methods {
		s.srv.OnRequest(m, handle)
	}
	s.srv.OnNoRoute(handle)
	return s, nil
}

// advertiseHost picks the address to put in headers for a listener bound
// to host: host itself unless it is a wildcard, else the source address
// the system would use toward the upstream.
func advertiseHost(host, upstream string) string {
	ip := net.ParseIP(host)
	if ip != nil && !ip.IsUnspecified() {
		return host
	}
	if host != "" && ip == nil {
		return host // a name
	}
	network := "udp4"
	if ip != nil && ip.To4() == nil {
		network = "udp6"
	}
	if c, err := net.Dial(network, net.JoinHostPort(upstream, "5060")); err == nil {
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).IP.String()
	}
	if network == "udp6" {
		return "::1"
	}
	return "127.0.0.1"
}

// Run binds every listener and serves until ctx ends. A listener that
// cannot be bound is an error before anything is served.
func (p *Proxy) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var closers []func() error
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	type serve func() error
	var serves []serve
	sides := []*side{p.local}
	if p.split {
		sides = append(sides, p.up)
	}
	for _, s := range sides {
		for _, e := range s.listen {
			sv, closer, err := p.bind(s, e)
			if err != nil {
				return err
			}
			closers = append(closers, closer)
			serves = append(serves, sv)
		}
	}
	p.resolveUpstream(ctx)
	errc := make(chan error, len(serves))
	for _, sv := range serves {
		go func() { errc <- sv() }()
	}
	// UDP requests leave from the listening socket, which sipgo finds in
	// its pool once its read loop has registered it.
	for _, s := range sides {
		if err := s.awaitUDP(ctx); err != nil {
			return err
		}
	}
	close(p.ready)
	p.log.Info("sip proxy listening", "local", endpoints(p.local.listen), "upstream", p.opts.Upstream.String(),
		"upstream_listen", endpoints(p.up.listen), "register_mode", string(p.opts.RegisterMode))
	go p.expireLoop(ctx)
	go p.resolveLoop(ctx)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if ctx.Err() == nil && err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("sipproxy: listener stopped: %w", err)
		}
	}
	for _, s := range sides {
		s.ua.Close()
	}
	return nil
}

func endpoints(es []Endpoint) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.String()
	}
	return out
}

func (p *Proxy) bind(s *side, e Endpoint) (func() error, func() error, error) {
	switch e.Transport {
	case "udp":
		conn, err := net.ListenPacket("udp", e.Addr())
		if err != nil {
			return nil, nil, fmt.Errorf("sipproxy: listen %s: %w", e, err)
		}
		setUDPBuffers(conn.(*net.UDPConn), udpBuffer)
		uc := newUDPConn(p, conn.(*net.UDPConn))
		la := conn.LocalAddr().(*net.UDPAddr)
		if _, ok := s.ports["udp"]; !ok {
			s.ports["udp"] = la.Port
			s.udpAddr = sip.Addr{IP: la.IP, Port: la.Port}
		}
		s.slots.Store(la.String(), &udpSlot{conn: uc})
		return func() error { return s.srv.ServeUDP(uc) }, conn.Close, nil
	case "tcp", "tls":
		addr := e.Addr()
		if e.Port == 0 && s.ports["udp"] != 0 {
			// Port 0 (tests): take the UDP listener's port when free, so
			// one port serves both as on a real device.
			if l, err := net.Listen("tcp", net.JoinHostPort(e.Host, strconv.Itoa(s.ports["udp"]))); err == nil {
				l.Close()
				addr = net.JoinHostPort(e.Host, strconv.Itoa(s.ports["udp"]))
			}
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("sipproxy: listen %s: %w", e, err)
		}
		s.ports[e.Transport] = l.Addr().(*net.TCPAddr).Port
		if e.Transport == "tls" {
			tl := tls.NewListener(l, p.opts.TLS)
			return func() error { return s.srv.ServeTLS(tl) }, l.Close, nil
		}
		return func() error { return s.srv.ServeTCP(l) }, l.Close, nil
	}
	return nil, nil, fmt.Errorf("sipproxy: listen %s: unsupported transport", e)
}

// Ports returns the bound port per transport of the local side (useful
// when listening on port 0).
func (p *Proxy) Ports() map[string]int { return p.local.ports }

// UpstreamPorts returns the bound ports of the upstream side.
func (p *Proxy) UpstreamPorts() map[string]int { return p.up.ports }

// every runs fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

func (p *Proxy) expireLoop(ctx context.Context) {
	every(ctx, time.Second, func() {
		p.tracker.Expire(p.now())
		p.regs.expire(p.now())
		p.gateSweep(p.now())
	})
}

// resolveUpstream learns the upstream's addresses, by which the shared
// sockets tell an inbound request from an outbound one.
func (p *Proxy) resolveUpstream(ctx context.Context) {
	host := p.opts.Upstream.Host
	if ip := net.ParseIP(host); ip != nil {
		p.upAddrs.Store(&[]net.IP{ip})
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		p.log.Warn("upstream does not resolve", "host", host, "err", err)
		return
	}
	p.upAddrs.Store(&ips)
}

func (p *Proxy) resolveLoop(ctx context.Context) {
	if net.ParseIP(p.opts.Upstream.Host) != nil {
		return
	}
	every(ctx, 5*time.Minute, func() { p.resolveUpstream(ctx) })
}

// fromUpstream tells whether a message from source came from the edge.
// The exact address and port always count; the address alone counts when
// it is not loopback (on loopback, test peers share the address).
func (p *Proxy) fromUpstream(source string) bool {
	host, port, err := net.SplitHostPort(source)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	addrs := p.upAddrs.Load()
	if ip == nil || addrs == nil {
		return false
	}
	for _, a := range *addrs {
		if !a.Equal(ip) {
			continue
		}
		if strconv.Itoa(p.opts.Upstream.Port) == port || !ip.IsLoopback() {
			return true
		}
	}
	return false
}

// isOurs reports whether a URI addresses the agent itself.
func (p *Proxy) isOurs(u *sip.Uri) bool {
	port := u.Port
	host := bareHost(u.Host)
	for _, s := range []*side{p.local, p.up} {
		if !strings.EqualFold(host, s.host) && !p.isListenHost(s, host) {
			continue
		}
		for t, lp := range s.ports {
			if port == lp || (port == 0 && lp == sip.DefaultPort(t)) {
				return true
			}
		}
	}
	return false
}

// bareHost strips the brackets SIP puts around IPv6 addresses.
func bareHost(h string) string { return strings.Trim(h, "[]") }

func (p *Proxy) isListenHost(s *side, host string) bool {
	host = bareHost(host)
	for _, e := range s.listen {
		if strings.EqualFold(e.Host, host) {
			return true
		}
		if ip := net.ParseIP(e.Host); ip != nil && ip.IsUnspecified() {
			if hip := net.ParseIP(host); hip != nil && isLocalIP(hip) {
				return true
			}
		}
	}
	return false
}

func isLocalIP(ip net.IP) bool {
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// addVia puts the agent's Via on a relayed request: the side's advertised
// host and its listening port for the transport, so responses and NATs
// see one stable address. UDP requests leave from the listening socket
// itself rather than a new one.
func (s *side) addVia(_ *sipgo.Client, r *sip.Request) error {
	tp := strings.ToUpper(r.Transport())
	port := s.ports[strings.ToLower(tp)]
	if port == 0 {
		port = s.ports["udp"]
	}
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: tp, Host: s.host, Port: port}
	via.Params.Add("branch", sip.GenerateBranchN(16))
	via.Params.Add("rport", "")
	r.PrependHeader(via)
	if tp == "UDP" && s.udpAddr.IP != nil {
		r.Laddr = s.udpAddr
	}
	return nil
}

// awaitUDP waits until sipgo has the side's UDP listener in its pool.
func (s *side) awaitUDP(ctx context.Context) error {
	if s.udpAddr.IP == nil {
		return nil
	}
	pool := s.ua.TransportLayer().Pool("udp")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c := pool.Get(s.udpAddr.String()); c != nil {
			c.TryClose() // Get took a reference
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("sipproxy: %s UDP listener %s did not start", s.name, s.udpAddr.String())
		}
		time.Sleep(time.Millisecond)
	}
}
