package sipproxy

import (
	"bytes"
	"net"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Admission control decides, for each datagram before it is parsed,
// whether the proxy takes on new work. Requests that start something (an
// initial INVITE, REGISTER, OPTIONS...) are refused with a stateless 503
// and Retry-After while the proxy is overloaded; everything that belongs
// to work already taken on (responses, ACK, CANCEL, BYE, re-INVITEs:
// anything with a To tag) always passes, so calls in progress are set up,
// changed and ended whatever arrives beside them.
//
// Overloaded means any of:
//   - the datagram waited in the socket buffer longer than maxSojourn: the
//     proxy is behind, and by the time it answered a new call its caller
//     would be retransmitting (T1 is 500 ms), doubling the load;
//   - more than shedRunnable goroutines wait for a CPU: the backlog has
//     moved from the kernel into the process (sipgo starts a goroutine
//     for every message it reads);
//   - live objects and goroutine stacks passed the share of the memory
//     budget kept for calls;
//   - MaxUnanswered new requests are on their way to be worked on, being
//     worked on or waiting for the next hop's first answer: the work in
//     progress, bounded like a window;
//   - MaxPending initial requests await their final response.
//
// Refusing costs a scan of the header bytes and one send, a few
// microseconds against the hundreds a relayed call costs, so under two or
// three times its capacity the proxy still spends nearly all its time on
// the calls it took on: goodput stays near capacity instead of
// collapsing.

// shedReason names why a new request was refused; the index of a counter.
type shedReason int

const (
	shedQueue      shedReason = iota // waited too long in the socket buffer
	shedBusy                         // too many goroutines waiting for a CPU
	shedMemory                       // live heap and stacks past the budget's share
	shedPending                      // MaxPending initial requests in progress
	shedUnanswered                   // MaxUnanswered new requests in the works
	shedReasons
)

var shedNames = [shedReasons]string{"queue", "busy", "memory", "pending", "unanswered"}

const (
	// maxSojourn is the default of Options.MaxQueueDelay: the longest a
	// new request may wait in the socket buffer and still be taken on: a fifth of T1, so a call admitted is
	// answered before its caller retransmits.
	maxSojourn = 100 * time.Millisecond
	// shedRunnable bounds the goroutines waiting for a CPU: the backlog
	// inside the process, one goroutine per message read. At the proxy's
	// top rate a few dozen wait at a time; hundreds mean it reads faster
	// than it works.
	shedRunnable = 256
	// shedWaiting bounds the requests waiting at the work gate (work.go)
	// for a slot: the backlog inside the process, counted exactly. As
	// with the window, a stall's worth of messages read at once past it
	// is let through (grace); four times as many are not.
	shedWaiting = 64
	// heapShare is the share of the memory budget that live objects and
	// goroutine stacks may fill before new work is refused; the rest is the
	// collector's room (garbage between two collections) and the runtime's
	// own.
	heapShare = 0.6
	// sampleEvery: the runtime's figures are read at most this often.
	sampleEvery = 10 * time.Millisecond
	// retryAfter is the Retry-After of a refusal, in seconds.
	retryAfter = "1"
	// shedTag is the To tag of the agent's stateless refusals: the ACK
	// for one ends here, unparsed.
	shedTag = "lp-overload"
)

// admission holds the runtime's figures the decision reads, sampled at
// most every sampleEvery and only when a new request arrives (an idle
// proxy never looks).
type admission struct {
	budget    atomic.Int64 // bytes; 0: no memory check
	held      atomic.Int64 // live heap at the last collection, plus goroutine stacks
	runnable  atomic.Int64 // goroutines waiting for a CPU
	sampledAt atomic.Int64 // unix ns
	onBacklog func()       // Options.OnBacklog
	mu        sync.Mutex
	sample    []metrics.Sample
}

const (
	mLive = iota
	mStacks
	mRunnable
)

func newAdmission(budget int64, onBacklog func()) *admission {
	a := &admission{sample: []metrics.Sample{
		mLive:     {Name: "/gc/heap/live:bytes"},
		mStacks:   {Name: "/memory/classes/heap/stacks:bytes"},
		mRunnable: {Name: "/sched/goroutines/runnable:goroutines"},
	}}
	a.budget.Store(budget)
	a.onBacklog = onBacklog
	return a
}

// refresh samples the runtime's figures unless they are fresh.
func (a *admission) refresh(now time.Time) {
	if now.UnixNano()-a.sampledAt.Load() < int64(sampleEvery) || !a.mu.TryLock() {
		return // fresh, or another reader is sampling
	}
	defer a.mu.Unlock()
	metrics.Read(a.sample)
	u := func(i int) int64 {
		if a.sample[i].Value.Kind() == metrics.KindUint64 {
			return int64(a.sample[i].Value.Uint64())
		}
		return 0
	}
	a.held.Store(u(mLive) + u(mStacks))
	a.runnable.Store(u(mRunnable))
	a.sampledAt.Store(now.UnixNano())
	if a.onBacklog != nil && u(mRunnable) > backlogHint {
		a.onBacklog()
	}
}

// window decides the "unanswered" refusals. A window that refused the
// moment it filled also refused calls far below capacity: a stall of a few
// tens of milliseconds (a collection, the VM descheduled) leaves that many
// milliseconds of calls in the socket buffer, read at once afterwards. So
// a full window refuses only once it has stayed full for grace; from then
// on it refuses whenever full, until a hold passes with no refusal (the
// overload is over). At four times its size it refuses at once, stall or
// not: that much in the works is an overload by any measure.
type window struct {
	size       int64
	grace      time.Duration
	hold       time.Duration
	fullSince  atomic.Int64 // unix ns; 0: not full at the last look
	lastRefuse atomic.Int64 // unix ns of the last refusal
}

const (
	windowGrace = 50 * time.Millisecond
	windowHold  = time.Second
)

// shed says whether a new request must be refused at now (unix ns), with
// n new requests in the works and coming more admitted and on their way
// to a work slot (transit). Those on their way fill the window like the
// rest, but only those in the works count towards four times its size:
// a stall's backlog, read at once, is not an overload by itself.
func (w *window) shed(n, coming, now int64) bool {
	if n+coming < w.size {
		w.fullSince.Store(0)
		return false
	}
	refuse := n >= 4*w.size || now-w.lastRefuse.Load() < int64(w.hold)
	if !refuse {
		since := w.fullSince.Load()
		if since == 0 {
			w.fullSince.CompareAndSwap(0, now)
			since = now
		}
		refuse = now-since >= int64(w.grace)
	}
	if refuse {
		w.lastRefuse.Store(now)
	}
	return refuse
}

// transit counts the new requests admitted before parsing that have not
// yet reached a work slot: parsed, their goroutine waiting for a CPU or at
// the work gate. The window judges each datagram on them as well as on
// the requests in the works. Without them a burst read at once was
// admitted whole and most of it refused only once it reached the window
// after parsing, a transaction and a goroutine each: 41-42 % of the
// refusals at two and three times the proxy's capacity, each costing what
// relaying a request does (docs/sip.md, "Admission control").
//
// A request admitted that never reaches a slot (a retransmission sipgo
// absorbs into its transaction, a datagram it cannot parse) would stay
// counted, so the count decays by a quarter every transitDecay: such
// leftovers are gone within a second or two, and a count that was right
// is low for a moment, which the window's own check after parsing covers.
type transit struct {
	n         atomic.Int64
	decayedAt atomic.Int64 // unix ns
}

const transitDecay = 100 * time.Millisecond

// admitted counts a new request let in before parsing.
func (t *transit) admitted() { t.n.Add(1) }

// arrived takes a request that reached its work slot out of the count.
func (t *transit) arrived() {
	for {
		v := t.n.Load()
		if v <= 0 || t.n.CompareAndSwap(v, v-1) {
			return
		}
	}
}

// load returns the count at now (unix ns), decayed for the time since the
// last look.
func (t *transit) load(now int64) int64 {
	at := t.decayedAt.Load()
	steps := (now - at) / int64(transitDecay)
	// The part of a step not yet taken stays for the next look, so looks
	// closer together than a step decay as fast as looks far apart.
	if steps <= 0 || !t.decayedAt.CompareAndSwap(at, at+steps*int64(transitDecay)) {
		return t.n.Load()
	}
	for {
		v := t.n.Load()
		d := v
		for i := int64(0); i < steps && d > 0; i++ {
			d -= (d + 3) / 4 // a quarter, rounded up, so that it reaches 0
		}
		if t.n.CompareAndSwap(v, d) {
			return d
		}
	}
}

// backlogHint runnable goroutines call Options.OnBacklog: far below
// shedRunnable, so that processors come back before anything is refused.
const backlogHint = 16

// overloaded says why new work must be refused now, or -1.
func (p *Proxy) overloaded(waited time.Duration) shedReason {
	if waited > p.opts.MaxQueueDelay {
		return shedQueue
	}
	now := time.Now()
	if p.window.shed(p.unanswered.Load(), p.transit.load(now.UnixNano()), now.UnixNano()) {
		return shedUnanswered
	}
	if p.busy.shed(p.work.waiting.Load(), 0, now.UnixNano()) {
		return shedBusy
	}
	p.admit.refresh(now)
	if p.admit.runnable.Load() > shedRunnable {
		return shedBusy
	}
	if b := p.admit.budget.Load(); b > 0 && float64(p.admit.held.Load()) > heapShare*float64(b) {
		return shedMemory
	}
	if p.pending.Load() >= int64(p.opts.MaxPending) {
		return shedPending
	}
	return -1
}

// inHand estimates the messages being worked on or waiting for an answer:
// sipgo runs each in a goroutine of its own; the initial requests awaiting
// a final response hold theirs for the transaction's life and are counted
// apart.
func (p *Proxy) inHand() int64 { return int64(runtime.NumGoroutine()) - p.pending.Load() }

// admitDatagram is admission control for one UDP datagram; false means it
// was answered or dropped here and sipgo never sees it.
func (p *Proxy) admitDatagram(c *udpConn, data []byte, from *net.UDPAddr, rx time.Time) bool {
	method, toTag, ok := peekRequest(data)
	if !ok {
		return true // a response, or something sipgo's parser will judge
	}
	if bytes.Equal(method, []byte("ACK")) {
		// The ACK for a refusal: the transaction it ends was never made.
		return !bytes.HasPrefix(toTag, []byte(shedTag))
	}
	if toTag != nil || bytes.Equal(method, []byte("CANCEL")) {
		return true
	}
	r := p.overloaded(sojourn(rx))
	if r < 0 {
		p.transit.admitted()
		return true
	}
	p.c.shed[r].Add(1)
	p.c.overload.Add(1)
	bp := refusalBufs.Get().(*[]byte)
	if reply := refusal((*bp)[:0], data, r); reply != nil {
		if _, err := c.WriteTo(reply, from); err == nil {
			p.c.response(503)
		}
		if cap(reply) <= 64<<10 {
			*bp = reply[:0]
		}
	}
	refusalBufs.Put(bp)
	return false
}

// peekRequest reads a request's method and its To tag (nil without one)
// from the raw bytes; ok is false for responses and for anything without
// a request line. Header folding and a tag inside a quoted display name
// are not handled: such a request is let through and parsed properly.
func peekRequest(data []byte) (method, toTag []byte, ok bool) {
	if bytes.HasPrefix(data, []byte("SIP/")) {
		return nil, nil, false
	}
	sp := bytes.IndexByte(data, ' ')
	if sp <= 0 || sp > 16 {
		return nil, nil, false
	}
	eachHeaderLine(data, func(name, value, _ []byte) bool {
		if bytes.EqualFold(name, []byte("To")) || bytes.EqualFold(name, []byte("t")) {
			toTag = tagOf(value)
			return false
		}
		return true
	})
	return data[:sp], toTag, true
}

// eachHeaderLine calls fn with the name (trimmed), value and whole line of
// each header line of a raw message, the start line and lines without a
// colon left out, until fn returns false or the header section ends.
func eachHeaderLine(data []byte, fn func(name, value, line []byte) bool) {
	head := data
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		head = data[:i+2]
	}
	i := bytes.Index(head, []byte("\r\n"))
	if i < 0 {
		return
	}
	for head = head[i+2:]; len(head) > 0; {
		i := bytes.Index(head, []byte("\r\n"))
		if i < 0 {
			return
		}
		line := head[:i]
		head = head[i+2:]
		if name, value, found := bytes.Cut(line, []byte(":")); found && !fn(bytes.TrimSpace(name), value, line) {
			return
		}
	}
}

// tagOf returns the tag parameter of a To header's value, or nil. It runs
// for every datagram, so it walks the parameters without allocating.
func tagOf(value []byte) []byte {
	// Parameters follow the address: after a closing '>' when there is one.
	if i := bytes.LastIndexByte(value, '>'); i >= 0 {
		value = value[i+1:]
	}
	for rest := value; len(rest) > 0; {
		var param []byte
		param, rest, _ = bytes.Cut(rest, []byte(";"))
		k, v, _ := bytes.Cut(param, []byte("="))
		if bytes.EqualFold(bytes.TrimSpace(k), []byte("tag")) {
			if v = bytes.TrimSpace(v); len(v) > 0 {
				return v
			}
		}
	}
	return nil
}

// refusal builds a stateless 503 for a new request (RFC 3261 8.2.6: its
// Via, From, To with a tag of ours, Call-ID and CSeq), with Retry-After,
// appended to dst; nil when the request lacks what the sender needs to
// match it. Offered three times its capacity the proxy refuses thousands
// a second, so it allocates nothing beyond growing dst.
func refusal(dst, data []byte, r shedReason) []byte {
	b := append(dst, "SIP/2.0 503 Service Unavailable\r\n"...)
	hasVia, hasTo := false, false
	eachHeaderLine(data, func(name, _, line []byte) bool {
		switch salvaged(name) {
		case 0:
			return true
		case 'v':
			hasVia = true
		case 't':
			hasTo = true
			b = append(append(b, bytes.TrimRight(line, " \t")...), ";tag="+shedTag+"-"...)
			b = strconv.AppendUint(b, uint64(time.Now().UnixNano()&0xffffff), 36)
			b = append(b, "\r\n"...)
			return true
		}
		b = append(append(b, line...), "\r\n"...)
		return true
	})
	if !hasVia || !hasTo {
		return nil
	}
	b = append(b, "Retry-After: "+retryAfter+"\r\nWarning: 399 leadport-agent \"overload: "...)
	b = append(b, shedNames[r]...)
	return append(b, "\"\r\nServer: leadport-agent\r\nContent-Length: 0\r\n\r\n"...)
}

// salvaged tells the header lines a stateless answer (a refusal, or
// malformed.go's 400) copies back so the sender can match it to its
// transaction, full names and compact, any case, without allocating: 'v'
// for Via, 't' for To, 'o' for From, Call-ID and CSeq, 0 for the rest.
func salvaged(name []byte) byte {
	switch len(name) {
	case 1:
		switch name[0] | 0x20 {
		case 'v':
			return 'v'
		case 't':
			return 't'
		case 'f', 'i':
			return 'o'
		}
	case 2:
		if bytes.EqualFold(name, []byte("to")) {
			return 't'
		}
	case 3:
		if bytes.EqualFold(name, []byte("via")) {
			return 'v'
		}
	case 4:
		if bytes.EqualFold(name, []byte("from")) || bytes.EqualFold(name, []byte("cseq")) {
			return 'o'
		}
	case 7:
		if bytes.EqualFold(name, []byte("call-id")) {
			return 'o'
		}
	}
	return 0
}

// refusalBufs hold the refusals being sent: one per datagram refused.
var refusalBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
