package sipproxy

import (
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// methods are counted by index; anything else counts as "OTHER".
var methods = []sip.RequestMethod{
	sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS,
	sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK,
	sip.UPDATE, sip.PUBLISH,
}

func methodIndex(m sip.RequestMethod) int {
	for i, x := range methods {
		if x == m {
			return i
		}
	}
	return len(methods)
}

// counters are lock-free: they are bumped on every message.
type counters struct {
	requests   [15]atomic.Uint64  // by methodIndex
	responses  [700]atomic.Uint64 // by status code
	parseErrs  atomic.Uint64      // requests that could not be parsed
	badResps   atomic.Uint64      // responses dropped as broken
	panics     atomic.Uint64      // recovered while handling one message
	decidePan  atomic.Uint64      // recovered inside the decision function
	blocked    atomic.Uint64
	bytesIn    atomic.Uint64
	decisions  atomic.Uint64
	decisionNs atomic.Uint64
	decideMax  atomic.Int64
	tcpSwitch  atomic.Uint64 // requests sent over TCP for their size
	relayErrs  atomic.Uint64 // next hop unreachable or timed out
	overload   atomic.Uint64 // new requests refused with 503: overloaded
	shed       [shedReasons]atomic.Uint64
	throttled  atomic.Uint64 // messages the reader held back: too many in hand
	signedN    atomic.Uint64 // calls given the agent's Identity
	signNs     atomic.Uint64
	signErrs   atomic.Uint64 // calls relayed unsigned: the signer failed
	stripped   atomic.Uint64 // Identity headers from the local side removed
	durableN   atomic.Uint64 // BYE answers held until the call's record was stored
	durableNs  atomic.Uint64
	durableTO  atomic.Uint64 // ... relayed after DurableWait without it
	durableIn  atomic.Int64  // BYE answers held now
	durableTop atomic.Int64  // the most held at once since start
	retrans    atomic.Uint64 // retransmissions answered or absorbed from a kept answer (answered.go)
	gate       gateCounters  // unknown sources (gate.go)
}

func (c *counters) signed(d time.Duration, err error) {
	if err != nil {
		c.signErrs.Add(1)
		return
	}
	c.signedN.Add(1)
	c.signNs.Add(uint64(d))
}

func (c *counters) request(m sip.RequestMethod) { c.requests[methodIndex(m)].Add(1) }

func (c *counters) response(code int) {
	if code >= 100 && code < 700 {
		c.responses[code].Add(1)
	}
}

func (c *counters) decided(d time.Duration) {
	c.decisions.Add(1)
	c.decisionNs.Add(uint64(d))
	raise(&c.decideMax, int64(d))
}

// raise makes v at least n: a high-water mark kept without a lock.
func raise(v *atomic.Int64, n int64) {
	for {
		m := v.Load()
		if n <= m || v.CompareAndSwap(m, n) {
			return
		}
	}
}

// Stats is a snapshot of the proxy's counters, for the local status and
// metrics.
type Stats struct {
	Requests       map[string]uint64 // by method
	Responses      map[int]uint64    // by status code
	ParseErrors    uint64
	BadResponses   uint64
	Panics         uint64
	DecisionPanics uint64
	Blocked        uint64
	BytesIn        uint64
	Decisions      uint64
	DecisionTime   time.Duration // total
	DecisionMax    time.Duration
	TCPSwitches    uint64
	RelayErrors    uint64
	Overloaded     uint64            // new requests refused with 503: overloaded
	Shed           map[string]uint64 // ... by reason: queue, busy, memory, pending, unanswered
	Throttled      uint64            // messages held back at the socket: too many in hand
	Signed         uint64            // calls given the agent's Identity
	SignTime       time.Duration     // total
	SignErrors     uint64            // calls relayed unsigned: the signer failed
	IdentityStrips uint64            // Identity headers from the local side removed
	DurableWaits   uint64            // BYE answers held until the call's record was stored
	DurableTime    time.Duration     // total time they were held
	DurableTimeout uint64            // held DurableWait and relayed without it
	DurableHeld    int64             // BYE answers held now, each with its transaction and goroutine
	DurableHeldTop int64             // the most held at once since start
	Retransmitted  uint64            // requests already answered, answered again from the answer kept (or absorbed)
	AnswersKept    int               // final answers kept for the transaction linger
	Security       SecurityStats     // unknown sources: limits, refusals, reports
	Pending        int64             // initial requests awaiting a final response
	Unanswered     int64             // new requests on their way to a work slot, in the works or awaiting a first answer: the window's count
	InHand         int64             // goroutines at work or waiting for an answer (estimate)
	Held           int64             // bytes: live heap at the last collection and goroutine stacks (sampled)
	Runnable       int64             // goroutines waiting for a CPU (sampled)
	Waiting        int64             // requests waiting at the work gate for a slot (work.go)
	WaitingTop     int64             // the most that waited at once since start
	MemoryBudget   int64             // bytes; 0: none
	CallsActive    int
	CallsTotal     uint64
	CallsOverflow  uint64
	Registrations  int // bound contacts held
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Requests:       map[string]uint64{},
		Responses:      map[int]uint64{},
		Shed:           map[string]uint64{},
		ParseErrors:    c.parseErrs.Load(),
		BadResponses:   c.badResps.Load(),
		Panics:         c.panics.Load(),
		DecisionPanics: c.decidePan.Load(),
		Blocked:        c.blocked.Load(),
		BytesIn:        c.bytesIn.Load(),
		Decisions:      c.decisions.Load(),
		DecisionTime:   time.Duration(c.decisionNs.Load()),
		DecisionMax:    time.Duration(c.decideMax.Load()),
		TCPSwitches:    c.tcpSwitch.Load(),
		RelayErrors:    c.relayErrs.Load(),
		Overloaded:     c.overload.Load(),
		Throttled:      c.throttled.Load(),
		Signed:         c.signedN.Load(),
		SignTime:       time.Duration(c.signNs.Load()),
		SignErrors:     c.signErrs.Load(),
		IdentityStrips: c.stripped.Load(),
		DurableWaits:   c.durableN.Load(),
		DurableTime:    time.Duration(c.durableNs.Load()),
		DurableTimeout: c.durableTO.Load(),
		DurableHeld:    c.durableIn.Load(),
		DurableHeldTop: c.durableTop.Load(),
		Retransmitted:  c.retrans.Load(),
		Security:       c.gate.snapshot(),
	}
	for r := range c.shed {
		if n := c.shed[r].Load(); n > 0 {
			s.Shed[shedNames[r]] = n
		}
	}
	for i := range c.requests {
		if n := c.requests[i].Load(); n > 0 {
			name := "OTHER"
			if i < len(methods) {
				name = string(methods[i])
			}
			s.Requests[name] = n
		}
	}
	for code := range c.responses {
		if n := c.responses[code].Load(); n > 0 {
			s.Responses[code] = n
		}
	}
	return s
}

// RefusalReasons names admission control's reasons, the keys of
// Stats.Shed, so that exporters list every one from the start.
func RefusalReasons() []string { return append([]string(nil), shedNames[:]...) }
