package sipproxy

import (
	"net"
	"os"
	"time"
)

// udpConn is a UDP listener as sipgo sees it. Every datagram passes the
// per-source gate and admission control here, before sipgo parses it:
// refusing a new call costs a few microseconds of byte scanning and one
// send, where parsing it and starting its transaction would cost the
// hundreds of microseconds a relayed call costs. That is what keeps the
// proxy serving at its capacity when several times that is offered.
type udpConn struct {
	*net.UDPConn
	p   *Proxy
	raw *rawUDP // the socket's calls without the runtime's syscall path; nil: through net.UDPConn
	oob []byte  // control messages (the kernel's receive time); one reader
}

func newUDPConn(p *Proxy, c *net.UDPConn) *udpConn {
	enableRxTimestamps(c)
	u := &udpConn{UDPConn: c, p: p, oob: make([]byte, 128)}
	if os.Getenv("LEADPORT_UDP_NETIO") == "" {
		raw, err := newRawUDP(c)
		if err != nil {
			p.log.Warn("UDP listener: raw socket calls unavailable, using the standard path", "err", err)
		}
		u.raw = raw
	}
	return u
}

func (c *udpConn) readMsg(b []byte) (n, oobn int, from *net.UDPAddr, err error) {
	if c.raw != nil {
		return c.raw.readMsg(b, c.oob)
	}
	n, oobn, _, from, err = c.ReadMsgUDP(b, c.oob)
	return n, oobn, from, err
}

// ReadFrom returns the next datagram admitted.
func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, oobn, addr, err := c.readMsg(b)
		if err != nil {
			return n, addr, err
		}
		if !c.p.gateRead(addr, b[:n]) {
			continue
		}
		if c.p.admitDatagram(c, b[:n], addr, rxTime(c.oob[:oobn])) {
			return n, addr, nil
		}
	}
}

// WriteTo sends unless the gate holds the bytes back; held bytes count as
// sent so that sipgo does not retry or log them as a failure.
func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if !c.p.gateWrite(addr, len(b)) {
		return len(b), nil
	}
	if ua, ok := addr.(*net.UDPAddr); ok && c.raw != nil {
		return c.raw.writeTo(b, ua)
	}
	return c.UDPConn.WriteTo(b, addr)
}

// sojourn is how long a datagram waited in the socket's buffer: zero when
// the kernel gave no receive time, and clamped against clock steps.
func sojourn(rx time.Time) time.Duration {
	if rx.IsZero() {
		return 0
	}
	d := time.Since(rx)
	if d < 0 || d > time.Minute {
		return 0
	}
	return d
}
