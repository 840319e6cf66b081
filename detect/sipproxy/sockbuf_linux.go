package sipproxy

import (
	"net"
	"syscall"
)

// setUDPBuffers raises a UDP socket's buffers. SetReadBuffer is capped by
// net.core.rmem_max; as root, SO_RCVBUFFORCE goes past it, as kamailio
// does. Failures leave the kernel's default, which still works.
func setUDPBuffers(c *net.UDPConn, size int) {
	c.SetReadBuffer(size)
	c.SetWriteBuffer(size)
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size)
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, size)
		})
	}
}
