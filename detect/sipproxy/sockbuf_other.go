//go:build !linux

package sipproxy

import "net"

// setUDPBuffers raises a UDP socket's buffers as far as the system allows.
func setUDPBuffers(c *net.UDPConn, size int) {
	c.SetReadBuffer(size)
	c.SetWriteBuffer(size)
}
