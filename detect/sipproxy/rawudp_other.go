//go:build !linux || 386

package sipproxy

import "net"

// rawUDP is Linux's (rawudp_linux.go); elsewhere the listener reads and
// writes through net.UDPConn.
type rawUDP struct{}

func newRawUDP(*net.UDPConn) (*rawUDP, error) { return nil, nil }

func (*rawUDP) readMsg(b, oob []byte) (int, int, *net.UDPAddr, error) {
	panic("sipproxy: no raw UDP on this platform")
}

func (*rawUDP) writeTo(b []byte, to *net.UDPAddr) (int, error) {
	panic("sipproxy: no raw UDP on this platform")
}
