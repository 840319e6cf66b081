package sipproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
)

// decidable are the methods that start or change something; they pass
// through the decision function, and so do the local side's responses to
// them.
func decidable(m sip.RequestMethod) bool {
	switch m {
	case sip.INVITE, sip.REFER, sip.REGISTER, sip.SUBSCRIBE, sip.MESSAGE:
		return true
	}
	return false
}

// dialogCreating are the methods whose initial requests the agent
// record-routes, so that the dialog's later requests pass through it.
func dialogCreating(m sip.RequestMethod) bool {
	switch m {
	case sip.INVITE, sip.SUBSCRIBE, sip.REFER, sip.NOTIFY:
		return true
	}
	return false
}

// reqCtx is what the proxy learnt about a request on its way in.
type reqCtx struct {
	at       time.Time
	dir      detect.Direction
	line     string
	remote   string
	inDialog bool
	tracked  bool // an initial INVITE of a line call
	verdict  detect.Verdict
	callID   string
	// key is the call's key in the tracker: the Call-ID, or for the
	// second leg of a hairpin call (dialog.Call.Hairpin) dialog.LegKey.
	key     string
	hairpin bool
	// finalSent is set once the server transaction has its final response
	// (relayed or made by the agent).
	finalSent bool
	// unanswered: the request counts in Proxy.unanswered until the next
	// hop's first answer or its end (answered).
	unanswered bool
	// working: the request holds a slot of the work gate (work.go).
	working bool
}

func callID(m sip.Message) string {
	if h := m.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

func hasToTag(req *sip.Request) bool {
	if to := req.To(); to != nil {
		_, ok := to.Params.Get("tag")
		return ok
	}
	return false
}

// handle is the entry for every request sipgo hands over, in its own
// goroutine for the life of the transaction.
func (p *Proxy) handle(in *side, req *sip.Request, tx sip.ServerTransaction) {
	rc := &reqCtx{}
	udp := strings.EqualFold(req.Transport(), "udp")
	inDialog := hasToTag(req)
	if udp {
		// Over TCP or TLS the answer is written to the sender's connection,
		// which a peer that stops reading can hold: no slot for that.
		p.work.enter()
		rc.working = true
		defer p.leaveWork(rc)
		if !inDialog && !req.IsAck() && !req.IsCancel() {
			p.transit.arrived() // admitted as new work before parsing
		}
	}
	at := p.now()
	rc.at = at
	defer p.recoverRequest(req, tx)
	p.c.request(req.Method)
	if p.opts.testHook != nil {
		p.opts.testHook(req)
	}
	tx, pass := p.gateRequest(in, req, tx)
	if !pass {
		return // an unknown source's request, answered or dropped (gate.go)
	}
	if p.absorbed(req, tx) {
		return // a retransmission of a request already answered (answered.go)
	}
	if req.IsAck() {
		p.relayAck(in, req, rc)
		return
	}
	if req.IsCancel() {
		// A CANCEL that matched an INVITE never gets here: sipgo answers
		// it and calls the INVITE's OnCancel.
		p.reply(tx, req, sip.StatusCallTransactionDoesNotExists, "", "")
		return
	}
	if status, reason, extra := validateRequest(req); status != 0 {
		p.c.parseErrs.Add(1)
		res := responseToFirst(req, status, reason)
		if extra != nil {
			res.AppendHeader(extra)
		}
		p.respond(tx, req, res)
		return
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		if req.Method == sip.OPTIONS && p.isOurs(&req.Recipient) {
			p.answerOptions(tx, req)
			return
		}
		p.reply(tx, req, sip.StatusTooManyHops, "", "")
		return
	}
	rc.inDialog, rc.callID = inDialog, callID(req)
	if !inDialog {
		// New work: refused while the proxy is overloaded (admit.go).
		// Requests inside dialogs (BYE, re-INVITE, ACK) always pass, so
		// calls can end. UDP datagrams were judged before parsing; TCP and
		// TLS requests are judged here, and the bound on pending requests
		// holds for all.
		r := shedReason(-1)
		if !udp {
			r = p.overloaded(0) // the window's check included
		}
		if n := p.pending.Add(1); r < 0 && n > int64(p.opts.MaxPending) {
			r = shedPending
		}
		// UDP datagrams were let in against the requests in the works and
		// those on their way (transit); this catches what that count
		// missed, one that decayed or arrived between two looks.
		rc.unanswered = true
		if n := p.unanswered.Add(1); r < 0 && udp && p.window.shed(n-1, 0, time.Now().UnixNano()) {
			r = shedUnanswered
		}
		defer p.answered(rc)
		if r >= 0 {
			p.pending.Add(-1)
			p.refuse(tx, req, r)
			return
		}
		defer p.pending.Add(-1)
	}
	// The server transaction keeps req to build its own responses (100,
	// 487), so it must stay as received: the relayed copy is fwd.
	fwd := req.Clone()
	restoreMethod(fwd)
	routedHairpin := p.stripOwnRoutes(fwd)
	if req.Method == sip.OPTIONS && !inDialog && fwd.Route() == nil && p.isOurs(&req.Recipient) && req.Recipient.User == "" {
		p.answerOptions(tx, req)
		return
	}
	ownVias := p.ownVias(req)
	if ownVias >= 2 {
		p.reply(tx, req, sip.StatusLoopDetected, "", "")
		return
	}
	// A request that already carries the agent's Via is on its second
	// pass: a call from one of the device's lines to another, routed out
	// to the edge and back. In a dialog, the agent's Record-Route for that
	// leg says so (hairpinParam).
	rc.hairpin = routedHairpin
	if !inDialog {
		rc.hairpin = ownVias == 1
	}
	rc.key = dialog.LegKey(rc.callID, rc.hairpin)
	rc.dir = p.direction(in, req)
	rc.line, rc.remote = p.classify(rc.dir, req, rc.key, inDialog)
	out := p.egress(rc.dir)

	if decidable(req.Method) {
		v := p.decide(&detect.Event{At: at, Direction: rc.dir, Line: rc.line, Remote: rc.remote, InDialog: inDialog, Request: req})
		if v.Block {
			p.block(tx, req, rc, v)
			return
		}
		rc.verdict = v
	}
	if err := p.route(rc, fwd); err != nil {
		if errors.Is(err, errToSelf) {
			// Addressed to the agent itself inside a dialog, with nowhere
			// further to go: the agent holds no dialog to answer it from.
			p.reply(tx, req, sip.StatusCallTransactionDoesNotExists, "", "")
			return
		}
		// Still a call on the line: it gets its usage record, and the
		// rules, which counted it live when they allowed it, hear it end.
		if req.IsInvite() && !inDialog && rc.line != "" &&
			p.tracker.Begin(rc.call(req)) {
			p.tracker.Fail(rc.key, sip.StatusTemporarilyUnavailable, p.now())
		}
		p.reply(tx, req, sip.StatusTemporarilyUnavailable, "", "")
		return
	}
	if mf := fwd.MaxForwards(); mf != nil {
		mf.Dec()
	} else {
		mf := sip.MaxForwardsHeader(70)
		fwd.AppendHeader(&mf)
	}
	switch {
	case req.IsInvite() && !inDialog && rc.line != "":
		rc.tracked = p.tracker.Begin(rc.call(req))
	case req.Method == sip.BYE:
		// Who hangs up, and when, is a sign of a dialer (answering-machine
		// detection ends calls from the caller's side seconds after the
		// answer): the tracker tells by the BYE's From tag.
		p.tracker.ByeTagged(rc.key, at, fromTag(req))
	case req.Method == sip.REGISTER:
		p.prepareRegister(out, fwd)
	}
	if !inDialog && dialogCreating(req.Method) {
		p.recordRoute(in, out, req, fwd, rc.hairpin)
	}
	if rc.dir == detect.Outbound {
		if n := stripIdentity(fwd); n > 0 {
			p.c.stripped.Add(uint64(n))
		}
		if req.IsInvite() && !inDialog && rc.line != "" {
			p.signCall(fwd, rc)
		}
	}
	p.relay(in, out, req, fwd, tx, rc)
}

// answered takes a new request out of the work in progress (Options.MaxUnanswered):
// the next hop has answered it, or it has ended. Called from the request's
// own goroutine only.
func (p *Proxy) answered(rc *reqCtx) {
	if rc.unanswered {
		rc.unanswered = false
		p.unanswered.Add(-1)
	}
}

// refuse answers a new request 503 with Retry-After: the proxy is
// overloaded for the reason r.
func (p *Proxy) refuse(tx sip.ServerTransaction, req *sip.Request, r shedReason) {
	p.c.shed[r].Add(1)
	p.c.overload.Add(1)
	res := sip.NewResponseFromRequest(req, sip.StatusServiceUnavailable, "Service Unavailable", nil)
	res.AppendHeader(sip.NewHeader("Retry-After", retryAfter))
	res.AppendHeader(sip.NewHeader("Warning", `399 leadport-agent "overload: `+shedNames[r]+`"`))
	p.respond(tx, req, res)
}

func (p *Proxy) recoverRequest(req *sip.Request, tx sip.ServerTransaction) {
	r := recover()
	if r == nil {
		return
	}
	p.c.panics.Add(1)
	p.log.Error("recovered a panic while handling a SIP request", "call_id", callID(req),
		"method", string(req.Method), "panic", MaskNumbers(fmt.Sprint(r)), "stack", string(debug.Stack()))
	if tx == nil || req.IsAck() {
		return
	}
	defer func() { recover() }() // the reply may fail the same way
	p.reply(tx, req, sip.StatusInternalServerError, "", "")
}

// direction: with sides on their own sockets the socket says it; on shared
// sockets the source does.
func (p *Proxy) direction(in *side, req *sip.Request) detect.Direction {
	if p.split {
		if in == p.up {
			return detect.Inbound
		}
		return detect.Outbound
	}
	if p.fromUpstream(req.Source()) {
		return detect.Inbound
	}
	return detect.Outbound
}

func (p *Proxy) egress(dir detect.Direction) *side {
	if dir == detect.Outbound {
		return p.up
	}
	return p.local
}

// classify finds the line and the other party (detect.Classify); in-dialog
// requests of a tracked call take the call's.
func (p *Proxy) classify(dir detect.Direction, req *sip.Request, key string, inDialog bool) (line, remote string) {
	if inDialog {
		if c, ok := p.tracker.Get(key); ok {
			return c.Line, c.Remote
		}
	}
	return detect.Classify(p.lines.Load(), dir, req)
}

// decide calls the decision function, timing it; a panic in it lets the
// message through and is counted.
func (p *Proxy) decide(ev *detect.Event) (v detect.Verdict) {
	start := time.Now()
	defer func() {
		p.c.decided(time.Since(start))
		if r := recover(); r != nil {
			p.c.decidePan.Add(1)
			p.log.Error("recovered a panic in the decision function; message let through",
				"call_id", callID(ev.Request), "panic", MaskNumbers(fmt.Sprint(r)))
			v = detect.Allow
		}
	}()
	return p.decider.Load().d.Decide(ev)
}

// block answers a request the decision refused.
func (p *Proxy) block(tx sip.ServerTransaction, req *sip.Request, rc *reqCtx, v detect.Verdict) {
	status := v.Status
	if status < 300 || status > 699 {
		status = sip.StatusForbidden
	}
	p.c.blocked.Add(1)
	if req.IsInvite() && !rc.inDialog && rc.line != "" {
		if !rc.tracked {
			rc.tracked = p.tracker.Begin(rc.call(req))
		}
		if rc.tracked {
			p.tracker.Block(rc.key, v.Rule, status, p.now())
		}
	}
	p.reply(tx, req, status, v.Reason, v.Rule)
}

// reply answers req from the agent itself, with a Warning naming the rule
// when there is one.
func (p *Proxy) reply(tx sip.ServerTransaction, req *sip.Request, status int, reason, rule string) {
	if reason == "" {
		reason = reasonPhrase(status)
	}
	res := sip.NewResponseFromRequest(req, status, reason, nil)
	if rule != "" {
		res.AppendHeader(sip.NewHeader("Warning", `399 leadport-agent "`+rule+`"`))
	}
	p.respond(tx, req, res)
}

// respond sends a response the agent made itself, back to the request's
// source (RFC 3581; sipgo would derive it from the Via and get an IPv6
// received= wrong), and counts it.
func (p *Proxy) respond(tx sip.ServerTransaction, req *sip.Request, res *sip.Response) {
	res.SetDestination(req.Source())
	p.c.response(res.StatusCode)
	// Kept before it is sent: sipgo ends the transaction as soon as the
	// answer is out, and a retransmission must then find it here.
	p.answers.remember(req, res)
	if err := tx.Respond(res); err != nil {
		p.log.Debug("reply not sent", "call_id", callID(req), "status", res.StatusCode, "err", err)
	}
}

func (p *Proxy) answerOptions(tx sip.ServerTransaction, req *sip.Request) {
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, MESSAGE, PRACK, UPDATE"))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	res.AppendHeader(sip.NewHeader("Server", "leadport-agent"))
	p.respond(tx, req, res)
}

// stripOwnRoutes removes the Route entries that name the agent (its own
// Record-Route coming back, or a phone's outbound-proxy route), and
// reports whether one of them was the agent's Record-Route for the second
// leg of a hairpin call.
func (p *Proxy) stripOwnRoutes(req *sip.Request) (hairpin bool) {
	for {
		r := req.Route()
		if r == nil || !p.isOurs(&r.Address) {
			return hairpin
		}
		if _, ok := r.Address.UriParams.Get(hairpinParam); ok {
			hairpin = true
		}
		req.RemoveHeader("Route")
	}
}

// hairpinParam marks the agent's Record-Route on the second leg of a
// hairpin call. Both legs carry the same Call-ID and the same tags (the
// edge between them is a proxy), so the route a request comes back on is
// the only sign of which leg it belongs to: a BYE passes the agent once
// for each leg, and each pass pops the agent's entries of one leg.
const hairpinParam = "lpleg"

// call is the tracker's view of an initial INVITE.
func (rc *reqCtx) call(req *sip.Request) dialog.Call {
	return dialog.Call{CallID: rc.callID, Line: rc.line, Direction: rc.dir, Remote: rc.remote, StartedAt: rc.at,
		Hairpin: rc.hairpin, CallerTag: fromTag(req)}
}

func fromTag(req *sip.Request) string {
	if f := req.From(); f != nil {
		t, _ := f.Params.Get("tag")
		return t
	}
	return ""
}

// route sets where fwd goes next: the first Route or the Request-URI for
// requests already routed (in-dialog, preloaded Route); for initial
// requests, the upstream when outbound, else the PBX, a registered contact,
// or the Request-URI.
func (p *Proxy) route(rc *reqCtx, fwd *sip.Request) error {
	if orig, ok := p.regs.byToken(fwd.Recipient.User, fwd.Recipient.Host, p); ok {
		fwd.Recipient = orig
	}
	if rc.inDialog || fwd.Route() != nil {
		if fwd.Route() == nil && p.isOurs(&fwd.Recipient) {
			return errToSelf
		}
		setNextHop(fwd)
		return nil
	}
	if rc.dir == detect.Outbound {
		setEndpoint(fwd, p.opts.Upstream)
		return nil
	}
	if !p.opts.Local.IsZero() {
		setEndpoint(fwd, p.opts.Local)
		return nil
	}
	if p.isOurs(&fwd.Recipient) {
		b, ok := p.regs.first(rc.line, p.now())
		if !ok {
			return fmt.Errorf("no contact registered for the line")
		}
		fwd.Recipient = b.uri
	}
	setNextHop(fwd)
	return nil
}

// errToSelf: the request's next hop would be the agent itself.
var errToSelf = errors.New("request addressed to the agent itself")

// ownVias counts the Vias of m that name the agent, up to two. A request
// with two has already passed the agent twice: a routing loop, answered
// 482 (RFC 3261 16.3 step 4) rather than relayed until Max-Forwards runs
// out, each hop a transaction held for seconds. A call from one of the
// device's lines to another passes the agent twice legitimately, once each
// way, and carries one Via of the agent when it comes back; a response
// with two is one to that second leg.
func (p *Proxy) ownVias(m sip.Message) int {
	n := 0
	for _, h := range m.GetHeaders("Via") {
		v, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		for _, s := range []*side{p.local, p.up} {
			if s.listensAt(v) {
				n++
				break
			}
		}
		if n >= 2 {
			break
		}
	}
	return n
}

// listensAt tells a Via that names this side: its advertised host and a
// port it listens on. The transport is not compared: a request the agent
// sends over TCP from a side that listens on UDP only (a signed INVITE too
// large for UDP) carries the UDP listener's port in its Via. It allocates
// nothing: it runs for every Via of every request.
func (s *side) listensAt(v *sip.ViaHeader) bool {
	if !strings.EqualFold(bareHost(v.Host), s.host) {
		return false
	}
	for _, port := range s.ports {
		if port == v.Port {
			return true
		}
	}
	return false
}

func setEndpoint(req *sip.Request, e Endpoint) {
	req.SetTransport(strings.ToUpper(e.Transport))
	req.SetDestination(e.Addr())
}

// setNextHop sends req to its first Route, else its Request-URI.
func setNextHop(req *sip.Request) {
	u := &req.Recipient
	if r := req.Route(); r != nil {
		u = &r.Address
	}
	tp := "UDP"
	if v, ok := u.UriParams.Get("transport"); ok && v != "" {
		tp = strings.ToUpper(v)
	} else if u.IsEncrypted() {
		tp = "TLS"
	}
	port := u.Port
	if port == 0 {
		port = sip.DefaultPort(tp)
	}
	req.SetTransport(tp)
	req.SetDestination(net.JoinHostPort(bareHost(u.Host), strconv.Itoa(port)))
}

// recordRoute adds the agent to the route set: one entry when the request
// leaves as it came (same socket and transport), else two (RFC 5658), the
// egress one on top so each side's first hop is the address it can reach.
func (p *Proxy) recordRoute(in, out *side, req, fwd *sip.Request, hairpin bool) {
	inTp := strings.ToLower(req.Transport())
	outTp := strings.ToLower(fwd.Transport())
	inRR := rrHeader(in, inTp)
	outRR := rrHeader(out, outTp)
	if hairpin {
		inRR.Address.UriParams.Add(hairpinParam, "2")
		outRR.Address.UriParams.Add(hairpinParam, "2")
	}
	if in == out && inTp == outTp {
		fwd.PrependHeader(inRR)
		return
	}
	fwd.PrependHeader(inRR)
	fwd.PrependHeader(outRR)
}

func rrHeader(s *side, tp string) *sip.RecordRouteHeader {
	port, ok := s.ports[tp]
	if !ok {
		for t, p := range s.ports {
			tp, port = t, p
			break
		}
	}
	return &sip.RecordRouteHeader{Address: sip.Uri{
		Scheme:    "sip",
		Host:      s.host,
		Port:      port,
		UriParams: sip.HeaderParams{{K: "transport", V: tp}, {K: "lr", V: ""}},
	}}
}

// maxUDPRequest is RFC 3261 18.1.1's limit: larger requests go over TCP.
const maxUDPRequest = 1300

// relay forwards fwd through out's client transaction and relays its
// responses back through tx until the final one.
func (p *Proxy) relay(in, out *side, req, fwd *sip.Request, tx sip.ServerTransaction, rc *reqCtx) {
	switched := false
	toUpstream := rc.dir == detect.Outbound
	if fwd.Transport() == "UDP" && mayExceed(fwd, maxUDPRequest-120) && messageSize(fwd) > maxUDPRequest-120 && // room for our Via
		!(toUpstream && p.upstreamUDPOnly()) {
		fwd.SetTransport("TCP")
		switched = true
		p.c.tcpSwitch.Add(1)
	}
	if v := fwd.Via(); v != nil && v.Params.Has("rport") {
		// RFC 3581: the response goes back to where the request came from.
		if h, pt, err := net.SplitHostPort(req.Source()); err == nil {
			v.Params.Add("rport", pt)
			v.Params.Add("received", h)
		}
	}
	if rc.working && !sendsAtOnce(fwd) {
		p.leaveWork(rc) // a connection or a name lookup may come first
	}
	// The transaction ends by its own timers or by Terminate below; it
	// needs no context of its own.
	ctx := context.Background()
	clTx, err := out.client.TransactionRequest(ctx, fwd, out.addVia)
	if err != nil && switched {
		// The next hop does not take TCP: send it over UDP after all and
		// leave the size to IP fragmentation. Signed INVITEs are all this
		// large, so an upstream that refused TCP is not asked again for a
		// while: a firewall that drops SYNs would otherwise cost every call
		// a connect timeout.
		if toUpstream {
			p.markUpstreamUDPOnly()
		}
		fwd.RemoveHeader("Via")
		fwd.SetTransport("UDP")
		clTx, err = out.client.TransactionRequest(ctx, fwd, out.addVia)
	}
	if err != nil {
		p.c.relayErrs.Add(1)
		p.log.Warn("next hop unreachable", "call_id", rc.callID, "method", string(req.Method), "err", MaskNumbers(err.Error()))
		if rc.tracked {
			p.tracker.Fail(rc.key, sip.StatusServiceUnavailable, p.now())
		}
		p.reply(tx, req, sip.StatusServiceUnavailable, "", "")
		return
	}
	defer clTx.Terminate()
	if req.IsInvite() {
		// Further 2xx while the transaction is still here (another fork's,
		// or a retransmission) go to the caller statelessly, as those that
		// arrive after it ended do (strayResponse).
		clTx.OnRetransmission(func(res *sip.Response) {
			if res.IsSuccess() {
				p.strayResponse(out, res)
			}
		})
		// The server transaction keeps its cancel hook until it ends, past
		// this function: the hook reaches the relayed request through a
		// pointer dropped on return, so the request (a few KB, signed) is
		// not kept for the transaction's linger.
		cancelTarget := new(atomic.Pointer[sip.Request])
		cancelTarget.Store(fwd)
		defer cancelTarget.Store(nil)
		tx.OnCancel(func(*sip.Request) {
			p.tracker.Cancel(rc.key, p.now())
			if f := cancelTarget.Load(); f != nil {
				p.sendCancel(out, f)
			}
		})
	}
	p.leaveWork(rc) // what follows waits on the next hop
	serverDone := tx.Done()
	for {
		select {
		case <-tx.Acks():
			// ACKs for non-2xx answers end in the server transaction;
			// sipgo parks a goroutine on each until someone takes it.
		case res, ok := <-clTx.Responses():
			if !ok {
				return
			}
			p.answered(rc)
			if p.relayResponse(out, req, fwd, tx, res, rc) {
				return
			}
		case <-serverDone:
			if !errors.Is(tx.Err(), sip.ErrTransactionCanceled) {
				return
			}
			// Cancelled: sipgo has answered 487 upstream; keep the client
			// transaction until the next hop's final answer to the CANCEL'd
			// INVITE, which it must get its ACK for.
			serverDone = nil
			rc.finalSent = true
		case <-clTx.Done():
			if rc.finalSent && rc.tracked {
				p.tracker.Fail(rc.key, sip.StatusRequestTerminated, p.now())
			}
			if !rc.finalSent {
				status := sip.StatusRequestTimeout
				if err := clTx.Err(); err != nil && !errors.Is(err, sip.ErrTransactionTimeout) {
					status = sip.StatusServiceUnavailable
				}
				p.c.relayErrs.Add(1)
				p.log.Debug("no final response from the next hop", "call_id", rc.callID, "method", string(req.Method), "err", clTx.Err())
				if rc.tracked {
					p.tracker.Fail(rc.key, status, p.now())
				}
				p.reply(tx, req, status, "", "")
			}
			return
		}
	}
}

// sizeBufs are reused to measure messages: the measurement runs for every
// UDP request, and a fresh builder each time was a tenth of the proxy's
// allocations.
var sizeBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// mayExceed is a cheap bound that spares measuring most requests: the
// body plus a generous allowance per header. Only requests that could be
// near the limit are serialised to measure them.
func mayExceed(req *sip.Request, limit int) bool {
	return len(req.Body())+100*len(req.Headers()) > limit
}

func messageSize(m sip.Message) int {
	b := sizeBufs.Get().(*bytes.Buffer)
	b.Reset()
	m.StringWrite(b)
	n := b.Len()
	if b.Cap() <= 64<<10 {
		sizeBufs.Put(b)
	}
	return n
}

// relayResponse relays one response of the client transaction and reports
// whether the transaction is over for the proxy.
func (p *Proxy) relayResponse(out *side, req, fwd *sip.Request, tx sip.ServerTransaction, res *sip.Response, rc *reqCtx) bool {
	at := p.now()
	status := res.StatusCode
	p.c.response(status)
	res.RemoveHeader("Via") // ours
	if rc.dir == detect.Outbound {
		p.upstreamDate(res, at)
	}
	if rc.finalSent {
		// Blocked or cancelled while ringing: the CANCEL is out, wait
		// for the end.
		if rc.tracked && status >= 200 {
			p.tracker.Response(rc.key, status, at, 0)
		}
		if status >= 200 && status < 300 && req.IsInvite() {
			p.log.Warn("blocked call answered before the CANCEL arrived", "call_id", rc.callID)
		}
		return status >= 200
	}
	if rc.dir == detect.Inbound && decidable(req.Method) && status > 100 && (status < 200 || status >= 300) {
		v := p.decide(&detect.Event{At: at, Direction: rc.dir, Line: rc.line, Remote: rc.remote, InDialog: rc.inDialog, Request: req, Response: res})
		if v.Block {
			p.block(tx, req, rc, v)
			rc.finalSent = true
			if status < 200 {
				p.sendCancel(out, fwd)
				return false
			}
			return true
		}
	}
	switch {
	case req.IsInvite() && !rc.inDialog:
		if rc.tracked {
			p.tracker.Response(rc.key, status, at, sessionExpires(res))
		}
	case (req.IsInvite() || req.Method == sip.UPDATE) && status >= 200 && status < 300:
		p.tracker.Refresh(rc.key, at, sessionExpires(res))
	case req.Method == sip.REGISTER && status >= 200 && status < 300:
		p.registered(rc.line, req, res, at)
	}
	if req.Method == sip.REGISTER && status >= 200 {
		p.registerAnswered(rc.line, fwd, res, at)
	}
	if req.Method == sip.BYE && status >= 200 && status < 300 {
		p.awaitRecord(rc.key)
	}
	// RFC 3581: back to the request's source. sipgo would derive it from
	// the Via and get an IPv6 received= wrong.
	res.SetDestination(req.Source())
	if status >= 200 {
		p.answers.remember(req, res) // before it is out, as in respond
	}
	if err := tx.Respond(res); err != nil {
		p.log.Debug("response not relayed", "call_id", rc.callID, "status", status, "err", err)
	}
	if status >= 200 {
		rc.finalSent = true
		return true
	}
	return false
}

func sessionExpires(m interface{ GetHeader(string) sip.Header }) time.Duration {
	h := m.GetHeader("Session-Expires")
	if h == nil {
		h = m.GetHeader("x")
	}
	if h == nil {
		return 0
	}
	v := h.Value()
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// sendCancel cancels the relayed INVITE downstream (RFC 3261 9.1): same
// Request-URI, Call-ID, From, To, CSeq number and top Via as fwd.
func (p *Proxy) sendCancel(out *side, fwd *sip.Request) {
	c := sip.NewRequest(sip.CANCEL, *fwd.Recipient.Clone())
	if v := fwd.Via(); v != nil {
		c.AppendHeader(v.Clone())
	}
	for _, r := range fwd.GetHeaders("Route") {
		c.AppendHeader(sip.HeaderClone(r))
	}
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	for _, h := range []sip.Header{fwd.From(), fwd.To(), fwd.CallID()} {
		if h != nil {
			c.AppendHeader(sip.HeaderClone(h))
		}
	}
	if cs := fwd.CSeq(); cs != nil {
		c.AppendHeader(&sip.CSeqHeader{SeqNo: cs.SeqNo, MethodName: sip.CANCEL})
	}
	c.SetBody(nil)
	c.SetTransport(fwd.Transport())
	c.SetDestination(fwd.Destination())
	ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
	go func() {
		defer cancel()
		tx, err := out.client.TransactionRequest(ctx, c, func(*sipgo.Client, *sip.Request) error { return nil })
		if err != nil {
			p.log.Debug("CANCEL not sent", "call_id", callID(fwd), "err", err)
			return
		}
		defer tx.Terminate()
		select {
		case <-tx.Responses():
		case <-tx.Done():
		case <-ctx.Done():
		}
	}()
}

// relayAck forwards an ACK for a 2xx (ACKs for other responses end in
// their INVITE's server transaction).
func (p *Proxy) relayAck(in *side, req *sip.Request, rc *reqCtx) {
	if mf := req.MaxForwards(); mf != nil {
		if mf.Val() == 0 {
			return
		}
		mf.Dec()
	}
	p.stripOwnRoutes(req)
	if orig, ok := p.regs.byToken(req.Recipient.User, req.Recipient.Host, p); ok {
		req.Recipient = orig
	}
	if req.Route() == nil && p.isOurs(&req.Recipient) {
		return // nowhere further to go
	}
	setNextHop(req)
	out := p.egress(p.direction(in, req))
	if rc.working && !sendsAtOnce(req) {
		p.leaveWork(rc)
	}
	if err := out.client.WriteRequest(req, out.addVia); err != nil {
		p.log.Debug("ACK not relayed", "call_id", callID(req), "err", err)
	}
}

// strayResponse forwards a response no transaction is waiting for: a 2xx
// retransmission, or another fork's 2xx, after the INVITE transaction
// ended. Proxies forward those statelessly (RFC 3261 16.7 step 10 and RFC
// 6026).
func (p *Proxy) strayResponse(s *side, res *sip.Response) {
	defer func() {
		if r := recover(); r != nil {
			p.c.panics.Add(1)
			p.log.Error("recovered a panic while relaying a response", "call_id", callID(res), "panic", MaskNumbers(fmt.Sprint(r)))
		}
	}()
	via := res.Via()
	if via == nil || !p.isOurs(&sip.Uri{Host: via.Host, Port: via.Port}) {
		p.c.badResps.Add(1)
		return
	}
	key := dialog.LegKey(callID(res), p.ownVias(res) == 2)
	res.RemoveHeader("Via")
	if res.Via() == nil {
		return
	}
	p.c.response(res.StatusCode)
	if res.IsSuccess() && res.CSeq() != nil && res.CSeq().MethodName == sip.INVITE {
		p.tracker.Response(key, res.StatusCode, p.now(), sessionExpires(res))
	}
	// sipgo's own Destination() drops the brackets of an IPv6 received=.
	next := res.Via()
	host := next.Host
	if v, ok := next.Params.Get("received"); ok && v != "" {
		host = v
	}
	port := next.Port
	if v, ok := next.Params.Get("rport"); ok && v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			port = n
		}
	}
	if port == 0 {
		port = sip.DefaultPort(next.Transport)
	}
	if !routable(host) {
		p.c.badResps.Add(1)
		return
	}
	res.SetDestination(net.JoinHostPort(bareHost(host), strconv.Itoa(port)))
	other := p.local
	if p.split && s == p.local {
		other = p.up
	}
	if err := other.srv.WriteResponse(res); err != nil {
		p.log.Debug("stray response not relayed", "call_id", callID(res), "err", err)
	}
}

// reasonPhrase is RFC 3261's phrase for the statuses the agent sends
// itself; sipgo leaves it to the caller.
func reasonPhrase(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 481:
		return "Call/Transaction Does Not Exist"
	case 482:
		return "Loop Detected"
	case 483:
		return "Too Many Hops"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 488:
		return "Not Acceptable Here"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	case 600:
		return "Busy Everywhere"
	case 603:
		return "Decline"
	}
	return ""
}
