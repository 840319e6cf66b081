package sipproxy

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/sourcelimit"
)

// The gate keeps scanners and floods from costing the device (docs/sip.md,
// "Scanners and floods"). A source is known when it is the upstream,
// sip.local, an address holding a registration made through the agent, or
// in a trusted network; known sources pass untouched. Every other source
// has an entry in a bounded table (detect/sourcelimit): a token bucket for
// what it sends, the bytes it sent and was sent, and what it tried. From
// such a source the agent relays REGISTERs only, answers OPTIONS itself
// and every other request 403; what comes faster than its bucket allows
// is dropped unanswered, and it is never sent more bytes than it sent.
// A source that trips a limit, is refused, or names a scanner tool is
// reported (OnScan) at most once per ReportEvery.
//
//	UDP datagram -> gateRead (bucket, bytes in, peek) -> sipgo -> handle
//	                                  handle -> gateRequest (what is relayed)
//	UDP send     -> gateWrite (bytes out <= bytes in)
//	REGISTER answered 401/403/404/407 -> failures -> penalty (fail2ban)

// SecurityMode is what the gate does with unknown sources.
type SecurityMode string

const (
	SecurityOff     SecurityMode = ""        // no per-source state at all
	SecurityObserve SecurityMode = "observe" // counted and reported; everything passes as before
	SecurityBlock   SecurityMode = "block"   // limits enforced
)

// Security configures the gate. The zero value is off; the agent fills it
// from the policy's security section.
type Security struct {
	Mode         SecurityMode
	RequestsPerS float64 // token bucket per unknown source
	Burst        int
	// Trusted are networks whose sources are known.
	Trusted    []netip.Prefix
	MaxSources int // entries in the table; default 1024
	// MaxAuthFailures registrations refused upstream penalise a source for
	// Penalty; 0 never penalises.
	MaxAuthFailures int
	Penalty         time.Duration
	// ReportEvery: at most one ScanReport per source this often; default
	// 5 minutes.
	ReportEvery time.Duration
}

// ScanReport is what the gate saw of one unknown source since its last
// report: the evidence of a security.scan violation. It holds no whole
// address: Source is the /24 (IPv4) or /48 (IPv6) it is in, SourceID a
// keyed hash that tells sources apart within one run of the agent.
type ScanReport struct {
	At       time.Time `json:"-"`
	Enforced bool      `json:"-"` // Mode was block: the source was refused, not only observed
	Source   string    `json:"source"`
	SourceID string    `json:"source_id"`
	// Reasons: rate (requests dropped over the limit), penalty (penalised
	// for failed registrations), scanner_user_agent, refused (requests the
	// agent answered itself), amplification (bytes held back).
	Reasons   []string  `json:"reasons"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Counts since the last report.
	Requests     uint64            `json:"requests"`
	Methods      map[string]uint64 `json:"methods"`
	ToUsers      int               `json:"to_users"`                     // distinct To users tried
	ToUsersMore  bool              `json:"to_users_more,omitempty"`      // ... at least that many
	Dropped      uint64            `json:"dropped"`                      // unanswered: over the rate, or penalised
	Refused      uint64            `json:"refused"`                      // answered by the agent (403)
	Relayed      uint64            `json:"relayed_register"`             // REGISTERs relayed upstream
	AuthFailures uint64            `json:"auth_failures"`                // of them refused upstream
	HeldBytes    uint64            `json:"held_bytes"`                   // answers held back: more than it sent
	UserAgent    string            `json:"user_agent,omitempty"`         // first seen, printable, at most 64 bytes
	PenaltyUntil time.Time         `json:"penalty_until,omitzero"`       // when penalised
	Suppressed   uint64            `json:"reports_suppressed,omitempty"` // reports of any source not made since the last one
	// Since the source was first seen.
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	// The limits in force.
	RequestsPerS float64 `json:"limit_requests_per_s"`
	Burst        int     `json:"limit_burst"`
}

// SecurityStats are the gate's counters, in Stats.
type SecurityStats struct {
	Sources      int    // unknown sources in the table now
	Dropped      uint64 // datagrams and requests dropped unanswered: over the rate or penalised
	Refused      uint64 // requests from unknown sources the agent answered itself
	Relayed      uint64 // REGISTERs from unknown sources relayed upstream
	AuthFailures uint64 // ... refused upstream
	Penalised    uint64 // penalties started
	TableFull    uint64 // datagrams of new sources refused: the table was full
	HeldBytes    uint64 // bytes not sent: more than the source had sent
	BytesIn      uint64 // admitted from unknown sources
	BytesOut     uint64 // sent to unknown sources
	Scans        uint64 // reports made
	Suppressed   uint64 // reports not made: too many sources at once
}

type gateCounters struct {
	sources                         atomic.Int64
	dropped, refused, relayed, fail atomic.Uint64
	penalised, full, held           atomic.Uint64
	bytesIn, bytesOut               atomic.Uint64
	scans, suppressed               atomic.Uint64
}

func (c *gateCounters) snapshot() SecurityStats {
	return SecurityStats{
		Sources: int(c.sources.Load()), Dropped: c.dropped.Load(), Refused: c.refused.Load(),
		Relayed: c.relayed.Load(), AuthFailures: c.fail.Load(), Penalised: c.penalised.Load(),
		TableFull: c.full.Load(), HeldBytes: c.held.Load(), BytesIn: c.bytesIn.Load(),
		BytesOut: c.bytesOut.Load(), Scans: c.scans.Load(), Suppressed: c.suppressed.Load(),
	}
}

// gate is the Proxy's per-source state; its zero value is ready (the
// configuration comes from Options.Security on first use).
type gate struct {
	init sync.Once
	cfg  atomic.Pointer[gateConfig]
	key  [16]byte // SourceID's key, new each run

	// mu guards the fields that follow and every entry of tab.
	mu         sync.Mutex
	tab        sourcelimit.Table[srcState]
	pending    []ScanReport // made under mu, handed to OnScan after
	reports    sourcelimit.Bucket
	suppressed uint64 // since the last report made

	knownMu sync.RWMutex
	known   map[netip.Addr]time.Time // registered addresses, until
	local   atomic.Pointer[[]netip.Addr]
	localAt time.Time // last resolution of sip.local; sweep only
}

type gateConfig struct {
	Security
	ttl time.Duration // an idle entry is dropped after this
}

// maxKnown bounds the registered addresses remembered (about 1 MB).
const maxKnown = 20_000

// Report budget across all sources: a flood from many addresses must not
// flood the store.
const (
	reportBurst = 20 // reports at once
	reportRate  = 20 // ... and per ReportEvery
)

func compileSecurity(s Security) *gateConfig {
	if s.MaxSources <= 0 {
		s.MaxSources = 1024
	}
	if s.ReportEvery <= 0 {
		s.ReportEvery = 5 * time.Minute
	}
	if s.Burst <= 0 {
		s.Burst = 1
	}
	tr := make([]netip.Prefix, len(s.Trusted))
	for i, p := range s.Trusted {
		tr[i] = p.Masked()
	}
	s.Trusted = tr
	return &gateConfig{Security: s, ttl: max(s.ReportEvery, 2*time.Minute)}
}

func (p *Proxy) gateConf() *gateConfig {
	g := &p.gate
	g.init.Do(func() {
		rand.Read(g.key[:])
		g.cfg.CompareAndSwap(nil, compileSecurity(p.opts.Security))
		g.tab.MinIdle = time.Second
		g.tab.OnEvict = func(e *sourcelimit.Entry[srcState]) {
			// Under mu: what the entry counted is reported, not lost.
			if e.V.reasons&^reasonAmplification != 0 {
				p.reportLocked(g.cfg.Load(), e, p.now(), true)
			}
		}
		if ip, err := netip.ParseAddr(bareHost(p.opts.Local.Host)); err == nil {
			g.local.Store(&[]netip.Addr{ip.Unmap()})
		}
	})
	return g.cfg.Load()
}

// SetSecurity replaces the gate's settings; the sources it holds keep
// their state (a penalty is served in full).
func (p *Proxy) SetSecurity(s Security) {
	p.gateConf()
	c := compileSecurity(s)
	p.gate.cfg.Store(c)
	p.gate.mu.Lock()
	p.gate.tab.Max = c.MaxSources
	p.gate.mu.Unlock()
}

// gateRead is asked for every UDP datagram from src before anything else
// reads it; false drops it. It is where per-source limits apply.
func (p *Proxy) gateRead(src *net.UDPAddr, data []byte) bool {
	cfg := p.gateConf()
	if cfg.Mode == SecurityOff || src == nil {
		return true
	}
	a := src.AddrPort().Addr().Unmap()
	if p.knownSource(cfg, a) {
		return true
	}
	return p.gateAdmit(cfg, a, data, peek(data))
}

// gateWrite is asked before n bytes go to dst over UDP; false drops them.
func (p *Proxy) gateWrite(dst net.Addr, n int) bool {
	cfg := p.gateConf()
	if cfg.Mode == SecurityOff {
		return true
	}
	var a netip.Addr
	switch d := dst.(type) {
	case *net.UDPAddr:
		a = d.AddrPort().Addr().Unmap()
	default:
		ap, err := netip.ParseAddrPort(dst.String())
		if err != nil {
			return true
		}
		a = ap.Addr().Unmap()
	}
	if p.knownSource(cfg, a) {
		return true
	}
	g, c := &p.gate, &p.c.gate
	g.mu.Lock()
	e := g.tab.Lookup(a)
	ok := e != nil && e.Spend(n)
	if !ok && e != nil {
		e.V.held += uint64(n)
		e.V.reasons |= reasonAmplification
		if cfg.Mode == SecurityObserve {
			e.BytesOut += uint64(n)
		}
	}
	g.mu.Unlock()
	if ok || cfg.Mode == SecurityObserve {
		c.bytesOut.Add(uint64(n))
	}
	if !ok {
		c.held.Add(uint64(n))
	}
	return ok || cfg.Mode == SecurityObserve
}

// knownSource: trusted network, the upstream, sip.local, or registered.
func (p *Proxy) knownSource(cfg *gateConfig, a netip.Addr) bool {
	for _, pf := range cfg.Trusted {
		if pf.Contains(a) {
			return true
		}
	}
	if ups := p.upAddrs.Load(); ups != nil {
		for _, ip := range *ups {
			if u, ok := netip.AddrFromSlice(ip); ok && u.Unmap() == a {
				return true
			}
		}
	}
	if l := p.gate.local.Load(); l != nil {
		for _, x := range *l {
			if x == a {
				return true
			}
		}
	}
	g := &p.gate
	g.knownMu.RLock()
	until, ok := g.known[a]
	g.knownMu.RUnlock()
	return ok && p.now().Before(until)
}

// gateAdmit takes a datagram (or a TCP request) from an unknown source into
// its entry: noted, then dropped if the source is penalised or over its
// rate. It reports whether the message goes on.
func (p *Proxy) gateAdmit(cfg *gateConfig, a netip.Addr, data []byte, pk peeked) bool {
	g, c := &p.gate, &p.c.gate
	now := p.now()
	g.mu.Lock()
	e := g.tab.Touch(a, now)
	if e == nil {
		g.mu.Unlock()
		c.full.Add(1)
		return cfg.Mode == SecurityObserve
	}
	e.V.note(pk)
	ok := true
	switch {
	case e.Penalised(now):
		e.V.reasons |= reasonPenalty
		ok = false
	case !e.Bucket.Take(now, cfg.RequestsPerS, cfg.Burst):
		e.V.reasons |= reasonRate
		ok = false
	}
	if !ok {
		e.V.dropped++
	}
	if ok || cfg.Mode == SecurityObserve {
		e.BytesIn += uint64(len(data))
		c.bytesIn.Add(uint64(len(data)))
	}
	reps := g.takePendingLocked() // an entry evicted for this one
	c.sources.Store(int64(g.tab.Len()))
	g.mu.Unlock()
	p.emit(reps)
	if !ok {
		c.dropped.Add(1)
	}
	return ok || cfg.Mode == SecurityObserve
}

// gateRequest decides, for a request sipgo parsed, whether its source may
// have it relayed. It returns the transaction to go on with (for a
// REGISTER, one that watches the upstream's answer; nil for an ACK), and
// false when the gate answered or dropped the request.
func (p *Proxy) gateRequest(in *side, req *sip.Request, tx sip.ServerTransaction) (sip.ServerTransaction, bool) {
	cfg := p.gateConf()
	if cfg.Mode == SecurityOff {
		return tx, true
	}
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return tx, true
	}
	a := ap.Addr().Unmap()
	if p.knownSource(cfg, a) {
		return tx, true
	}
	if req.Transport() != "UDP" {
		// UDP datagrams passed gateRead; streams are limited per request.
		if !p.gateAdmit(cfg, a, nil, peekParsed(req)) {
			return nil, false
		}
	}
	inDialog := hasToTag(req)
	verdict := gatePass
	switch {
	case req.IsAck():
		verdict = gateDrop // for a 2xx: no dialog of an unknown source exists
	case req.IsCancel():
		// Matched CANCELs never get here; others are answered 481.
	case req.Method == sip.REGISTER && !inDialog:
		verdict = gateRegister
	case req.Method == sip.OPTIONS && !inDialog:
		verdict = gateOptions
	case inDialog:
		// A call of a line set up by a known source (a phone whose
		// registration lapsed mid-call) goes on.
		if _, ok := p.tracker.Get(callID(req)); !ok {
			verdict = gateRefuse
		}
	default:
		verdict = gateRefuse
	}
	g, c := &p.gate, &p.c.gate
	now := p.now()
	g.mu.Lock()
	if e := g.tab.Touch(a, now); e != nil {
		switch verdict {
		case gateRefuse:
			e.V.refused++
			e.V.reasons |= reasonRefused
		case gateRegister:
			e.V.relayed++
		}
	}
	reps := g.takePendingLocked()
	g.mu.Unlock()
	p.emit(reps)
	switch verdict {
	case gateRefuse:
		c.refused.Add(1)
	case gateRegister:
		c.relayed.Add(1)
	}
	if verdict == gateRegister {
		return &registerWatch{ServerTransaction: tx, p: p, a: a}, true
	}
	if cfg.Mode == SecurityObserve {
		return tx, true
	}
	switch verdict {
	case gateDrop:
		return nil, false
	case gateRefuse:
		p.reply(tx, req, sip.StatusForbidden, "", "")
		return nil, false
	case gateOptions:
		p.answerOptions(tx, req)
		return nil, false
	}
	return tx, true
}

type gateVerdict int

const (
	gatePass gateVerdict = iota
	gateDrop
	gateRefuse
	gateOptions
	gateRegister
)

// registerWatch is a REGISTER's server transaction that tells the gate how
// the upstream answered it.
type registerWatch struct {
	sip.ServerTransaction
	p    *Proxy
	a    netip.Addr
	done bool
}

func (w *registerWatch) Respond(res *sip.Response) error {
	if res.StatusCode >= 200 && !w.done {
		w.done = true
		switch res.StatusCode {
		case sip.StatusUnauthorized, sip.StatusForbidden, sip.StatusNotFound, sip.StatusProxyAuthRequired:
			w.p.registerFailed(w.a)
		}
	}
	return w.ServerTransaction.Respond(res)
}

// registerFailed counts a registration of an unknown source refused
// upstream; enough of them penalise it.
func (p *Proxy) registerFailed(a netip.Addr) {
	cfg := p.gateConf()
	g, c := &p.gate, &p.c.gate
	c.fail.Add(1)
	now := p.now()
	g.mu.Lock()
	if e := g.tab.Lookup(a); e != nil {
		e.V.authFail++
		if e.Fail(now, cfg.MaxAuthFailures, cfg.Penalty) {
			e.V.reasons |= reasonPenalty
			c.penalised.Add(1)
		}
	}
	g.mu.Unlock()
}

// gateRegistered makes the source of a REGISTER the registrar accepted,
// and its contacts' addresses, known until the bindings expire (and a
// minute more, for the re-registration).
func (p *Proxy) gateRegistered(req *sip.Request, bs []Binding) {
	cfg := p.gateConf()
	if cfg.Mode == SecurityOff || len(bs) == 0 {
		return
	}
	until := time.Time{}
	for _, b := range bs {
		until = maxTime(until, b.Expires)
	}
	until = until.Add(time.Minute)
	addrs := make([]netip.Addr, 0, 1+len(bs))
	if ap, err := netip.ParseAddrPort(req.Source()); err == nil {
		addrs = append(addrs, ap.Addr().Unmap())
	}
	for _, b := range bs {
		if ip, err := netip.ParseAddr(bareHost(b.uri.Host)); err == nil {
			addrs = append(addrs, ip.Unmap())
		}
	}
	g := &p.gate
	g.knownMu.Lock()
	if g.known == nil {
		g.known = map[netip.Addr]time.Time{}
	}
	for _, a := range addrs {
		if _, ok := g.known[a]; !ok && len(g.known) >= maxKnown {
			continue // known again when room is made at expiry
		}
		g.known[a] = maxTime(g.known[a], until)
	}
	g.knownMu.Unlock()
	g.mu.Lock()
	for _, a := range addrs {
		g.tab.Remove(a) // what it counted as unknown is moot now
	}
	p.c.gate.sources.Store(int64(g.tab.Len()))
	g.mu.Unlock()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// gateSweep, every second: reports that fell due, idle sources dropped,
// lapsed registrations forgotten, sip.local resolved now and then.
func (p *Proxy) gateSweep(now time.Time) {
	cfg := p.gateConf()
	if cfg.Mode == SecurityOff {
		return
	}
	g := &p.gate
	g.mu.Lock()
	g.tab.Expire(now, cfg.ttl)
	g.tab.Each(func(e *sourcelimit.Entry[srcState]) { p.maybeReportLocked(cfg, e, now) })
	reps := g.takePendingLocked()
	p.c.gate.sources.Store(int64(g.tab.Len()))
	resolve := p.opts.Local.Host != "" && g.local.Load() == nil && now.Sub(g.localAt) > 5*time.Minute
	if resolve {
		g.localAt = now
	}
	g.mu.Unlock()
	p.emit(reps)

	g.knownMu.Lock()
	for a, until := range g.known {
		if !now.Before(until) {
			delete(g.known, a)
		}
	}
	g.knownMu.Unlock()
	if resolve {
		// A name: resolved here, off the read path. (An address is
		// parsed once at start.)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", p.opts.Local.Host)
		cancel()
		if err == nil {
			for i := range ips {
				ips[i] = ips[i].Unmap()
			}
			p.gate.localNames(ips)
		}
	}
}

// localNames keeps the addresses of sip.local's name; a later sweep does
// not resolve it again (it is a host of the device's LAN, rarely moving).
func (g *gate) localNames(ips []netip.Addr) { g.local.Store(&ips) }

// Report reasons.
const (
	reasonRate uint8 = 1 << iota
	reasonPenalty
	reasonUserAgent
	reasonRefused
	reasonAmplification
)

var reasonNames = []string{"rate", "penalty", "scanner_user_agent", "refused", "amplification"}

// maybeReportLocked reports e when something tripped and its window has
// passed (or it was never reported). The sweep asks, every second: a
// source is reported within a second of tripping, with what it did in
// that second, and the signalling path never builds a report.
func (p *Proxy) maybeReportLocked(cfg *gateConfig, e *sourcelimit.Entry[srcState], now time.Time) {
	// Bytes held back alone are no news: they are the agent's own
	// retransmissions (a 403 to an INVITE never ACKed) meeting the guard.
	if e.V.reasons&^reasonAmplification == 0 || !e.V.reportedAt.IsZero() && now.Sub(e.V.reportedAt) < cfg.ReportEvery {
		return
	}
	p.reportLocked(cfg, e, now, false)
}

// reportLocked makes e's report, within the budget of reports across all
// sources, and starts its next window.
func (p *Proxy) reportLocked(cfg *gateConfig, e *sourcelimit.Entry[srcState], now time.Time, final bool) {
	g := &p.gate
	if p.opts.OnScan == nil {
		e.V.reset(now)
		return
	}
	if !g.reports.Take(now, float64(reportRate)/cfg.ReportEvery.Seconds(), reportBurst) {
		g.suppressed++
		p.c.gate.suppressed.Add(1)
		if !final {
			e.V.reportedAt = now // tried again next window, counts kept
		}
		return
	}
	st := &e.V
	r := ScanReport{
		At: now, Enforced: cfg.Mode == SecurityBlock,
		Source: maskAddr(e.Addr), SourceID: g.sourceID(e.Addr),
		FirstSeen: e.FirstSeen.UTC(), LastSeen: e.Seen.UTC(),
		Requests: st.requests, Methods: st.methodCounts(), ToUsers: len(st.toUsers), ToUsersMore: st.toMore,
		Dropped: st.dropped, Refused: st.refused, Relayed: st.relayed, AuthFailures: st.authFail,
		HeldBytes: st.held, UserAgent: st.ua, Suppressed: g.suppressed,
		BytesIn: e.BytesIn, BytesOut: e.BytesOut,
		RequestsPerS: cfg.RequestsPerS, Burst: cfg.Burst,
	}
	if e.Penalised(now) {
		r.PenaltyUntil = e.PenaltyUntil.UTC()
	}
	for i, name := range reasonNames {
		if st.reasons&(1<<i) != 0 {
			r.Reasons = append(r.Reasons, name)
		}
	}
	g.suppressed = 0
	g.pending = append(g.pending, r)
	st.reset(now)
}

func (g *gate) takePendingLocked() []ScanReport {
	r := g.pending
	g.pending = nil
	return r
}

// emit hands reports to OnScan, outside the gate's lock.
func (p *Proxy) emit(reps []ScanReport) {
	for _, r := range reps {
		p.c.gate.scans.Add(1)
		p.log.Info("security: unknown source reported", "source", r.Source, "source_id", r.SourceID,
			"reasons", r.Reasons, "requests", r.Requests, "dropped", r.Dropped, "refused", r.Refused,
			"user_agent", r.UserAgent, "enforced", r.Enforced)
		p.opts.OnScan(r)
	}
}

// maskAddr keeps the network of an address, as phone numbers keep their
// ends: the /24 of IPv4, the /48 of IPv6.
func maskAddr(a netip.Addr) string {
	bits := 24
	if a.Is6() {
		bits = 48
	}
	pf, err := a.Prefix(bits)
	if err != nil {
		return "?"
	}
	return pf.String()
}

func (g *gate) sourceID(a netip.Addr) string {
	m := hmac.New(sha256.New, g.key[:])
	b := a.As16()
	m.Write(b[:])
	return hex.EncodeToString(m.Sum(nil)[:6])
}

// srcState is what the gate counts per unknown source, since its last
// report; the user agent is kept across reports.
type srcState struct {
	requests, dropped, refused, relayed, authFail, held uint64
	methods                                             [len(methodNames)]uint32
	toUsers                                             []uint32 // FNV-1a of each distinct To user, at most maxToUsers
	toMore                                              bool
	ua                                                  string
	reasons                                             uint8
	reportedAt                                          time.Time
}

// maxToUsers bounds the distinct To users counted per source and window.
const maxToUsers = 64

// methodNames: the proxy's methods, then anything else, then responses.
var methodNames = func() [16]string {
	var n [16]string
	for i, m := range methods {
		n[i] = string(m)
	}
	n[len(methods)] = "OTHER"
	n[len(methods)+1] = "response"
	return n
}()

func (s *srcState) note(pk peeked) {
	s.requests++
	i := len(methods) + 1
	if !pk.response {
		i = methodIndex(sip.RequestMethod(pk.method))
	}
	s.methods[i]++
	if len(pk.toUser) > 0 {
		h := fnv32(pk.toUser)
		seen := false
		for _, x := range s.toUsers {
			if x == h {
				seen = true
				break
			}
		}
		switch {
		case seen:
		case len(s.toUsers) < maxToUsers:
			s.toUsers = append(s.toUsers, h)
		default:
			s.toMore = true
		}
	}
	if s.ua == "" && len(pk.userAgent) > 0 {
		s.ua = printable(pk.userAgent, 64)
	}
	if pk.scanner {
		s.reasons |= reasonUserAgent
	}
}

func (s *srcState) methodCounts() map[string]uint64 {
	m := map[string]uint64{}
	for i, n := range s.methods {
		if n > 0 {
			m[methodNames[i]] = uint64(n)
		}
	}
	return m
}

func (s *srcState) reset(now time.Time) {
	ua := s.ua
	*s = srcState{ua: ua, reportedAt: now, toUsers: s.toUsers[:0]}
}

func fnv32(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

// printable keeps the printable ASCII of b, at most n bytes.
func printable(b []byte, n int) string {
	out := make([]byte, 0, min(len(b), n))
	for _, c := range b {
		if len(out) == n {
			break
		}
		if c >= 0x20 && c < 0x7f {
			out = append(out, c)
		}
	}
	return string(out)
}
