package sipproxy

import (
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
)

// workGate bounds the requests being worked on at once: from the moment a
// request's goroutine enters handle until it is relayed, answered or
// dropped. sipgo starts a goroutine for every message it reads, with no
// bound; when the cores are full those goroutines all ran at once, each
// growing its stack, parsing, signing and contending for sipgo's
// transaction table lock, and under twice its capacity the proxy held
// 4,000 of them and 27 MiB of stacks. Past the gate a few work and the
// rest wait at its door with the small stack they started with, in the
// order they came.
//
// The count of those waiting is exact, where the runtime's count of
// runnable goroutines misses those parked on a lock: it is what holds the
// reader (throttle) and refuses new calls (admission control, "busy"), so
// that a backlog stays in the socket buffer, as kamailio's does, rather
// than in the process.
//
// A request leaves the gate before anything that waits on the network:
// a relay waiting for the next hop's answer, a connection being set up or
// a name looked up before sending, the store's commit that a BYE's answer
// waits for. The answers it waits for come through the reader, which the
// gate may be holding back. Requests that came over TCP or TLS take no
// slot: their answers are written to the sender's connection, which a
// peer that stops reading holds, and the gate is for the datagram floods
// a stream's own flow control does not stop.
type workGate struct {
	slots   chan struct{}
	waiting atomic.Int64
	top     atomic.Int64 // the most that waited at once
}

// workSlots is how many requests are worked on at once: enough that a
// request waiting a moment on a lock or a write leaves the cores work,
// few enough that the work in hand stays a few milliseconds' worth.
func workSlots() int { return max(16, 4*runtime.GOMAXPROCS(0)) }

func newWorkGate(n int) *workGate { return &workGate{slots: make(chan struct{}, n)} }

// enter takes a slot, waiting for one when all are taken.
func (g *workGate) enter() {
	select {
	case g.slots <- struct{}{}:
		return
	default:
	}
	raise(&g.top, g.waiting.Add(1))
	g.slots <- struct{}{}
	g.waiting.Add(-1)
}

// leave gives the slot back.
func (g *workGate) leave() { <-g.slots }

// sendsAtOnce says whether sending m waits on nothing but the socket: UDP
// to an address. A name is looked up by sipgo as it sends (DNS may take
// seconds), and TCP or TLS may have a connection to set up first.
func sendsAtOnce(m sip.Message) bool {
	if !strings.EqualFold(m.Transport(), "udp") {
		return false
	}
	host, _, err := net.SplitHostPort(m.Destination())
	if err != nil {
		return false
	}
	_, err = netip.ParseAddr(host)
	return err == nil
}

// leaveWork gives back rc's slot, once: handle defers it, and the relay
// calls it before it waits on the next hop.
func (p *Proxy) leaveWork(rc *reqCtx) {
	if rc.working {
		rc.working = false
		p.work.leave()
	}
}
