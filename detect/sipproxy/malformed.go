package sipproxy

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// readFilter sees every datagram and stream chunk before sipgo parses it.
// It counts bytes and, for UDP, notes the datagram and its sender for the
// listener: sipgo drops a request it cannot parse with only a log line (the
// sender would retransmit for half a minute), and that log line, handled
// by the same goroutine right after, is where the proxy answers it (see
// parseFailed). Parsing here as well would double the cost of every
// message.
func (p *Proxy) readFilter(s *side, info sip.TransportReadProps, data []byte) []byte {
	p.c.bytesIn.Add(uint64(len(data)))
	p.throttle()
	if strings.EqualFold(info.Transport, "udp") {
		if v, ok := s.slots.Load(info.LocalAddr.String()); ok {
			sl := v.(*udpSlot)
			sl.mu.Lock()
			sl.data, sl.from = data, info.RemoteAddr
			sl.mu.Unlock()
		}
	}
	return data
}

// throttle holds the reading goroutine while too many messages wait to be
// handled. sipgo starts a goroutine for every message it reads, with no
// bound; admission control (admit.go) refuses new work long before that
// matters, but responses and requests inside dialogs always pass it. When
// even those arrive faster than the device can relay them, holding the
// reader leaves the excess in the socket buffer, where the kernel drops
// what does not fit and senders retransmit: overload then costs latency,
// not the agent's memory.
//
// Memory is not a reason to hold the reader: the answers that end the
// transactions holding it come through the same socket.
func (p *Proxy) throttle() {
	busy := func() bool {
		if p.work.waiting.Load() > maxWaiting {
			return true
		}
		p.admit.refresh(time.Now())
		return p.admit.runnable.Load() > maxRunnable
	}
	if !busy() {
		return
	}
	p.c.throttled.Add(1)
	deadline := time.Now().Add(time.Second)
	for busy() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Microsecond)
	}
}

// maxRunnable is how many goroutines may wait for a CPU before the
// readers wait: four times the bound at which new work is refused;
// maxWaiting the same for requests waiting at the work gate.
const (
	maxRunnable = 4 * shedRunnable
	maxWaiting  = 4 * shedWaiting
)

// udpSlot is the last datagram a UDP listener read, valid while sipgo
// parses it.
type udpSlot struct {
	conn net.PacketConn
	mu   sync.Mutex
	data []byte
	from net.Addr
}

// parseFailed runs when sipgo reports a message it could not parse. A UDP
// request gets a 400 (RFC 3261 16.3) built from the headers that can be
// salvaged; a broken response is dropped; both are counted. On TCP there is
// no message boundary to answer at: sipgo's stream parser drops it.
func (p *Proxy) parseFailed(s *side, data string) {
	if strings.HasPrefix(data, "SIP/") {
		p.c.badResps.Add(1)
		return
	}
	p.c.parseErrs.Add(1)
	var conn net.PacketConn
	var to net.Addr
	s.slots.Range(func(_, v any) bool {
		sl := v.(*udpSlot)
		sl.mu.Lock()
		if sl.data != nil && string(sl.data) == data {
			conn, to = sl.conn, sl.from
		}
		sl.mu.Unlock()
		return conn == nil
	})
	if conn == nil {
		return
	}
	reply := badRequest([]byte(data))
	if reply == nil {
		return
	}
	if _, err := conn.WriteTo(reply, to); err != nil {
		p.log.Debug("400 not sent", "err", err)
		return
	}
	p.c.response(sip.StatusBadRequest)
}

// badRequest builds a 400 for a request that failed to parse, or nil when
// too little of it makes sense to answer (no request line or no Via).
func badRequest(data []byte) []byte {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	lines := strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n")
	if len(lines) == 0 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "SIP/2.0") {
		return nil
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 400 Bad Request\r\n")
	hasVia, hasTo := false, false
	for i := 1; i < len(lines); i++ {
		l := lines[i]
		name, _, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		k := salvaged([]byte(strings.TrimSpace(name)))
		if k == 0 {
			continue
		}
		if k == 'v' {
			hasVia = true
		}
		if k == 't' {
			hasTo = true
			if !strings.Contains(strings.ToLower(l), "tag=") {
				l += ";tag=lp400"
			}
		}
		b.WriteString(strings.TrimRight(l, " \t"))
		b.WriteString("\r\n")
	}
	if !hasVia || !hasTo {
		return nil
	}
	b.WriteString("Warning: 399 leadport-agent \"malformed request\"\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String())
}
