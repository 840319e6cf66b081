package sipproxy

import (
	"encoding/binary"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// enableRxTimestamps asks the kernel to stamp each datagram with its
// arrival time (SO_TIMESTAMPNS), from which admission control learns how
// long the datagram waited in the socket buffer.
func enableRxTimestamps(c *net.UDPConn) {
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
		})
	}
}

// rxTime finds the arrival time among a datagram's control messages.
func rxTime(oob []byte) time.Time {
	if len(oob) == 0 {
		return time.Time{}
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}
	}
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET || m.Header.Type != syscall.SCM_TIMESTAMPNS {
			continue
		}
		// A struct timespec of the platform's word size; decoded rather
		// than cast, since the data need not be aligned.
		switch d := m.Data; {
		case unsafe.Sizeof(syscall.Timespec{}) == 16 && len(d) >= 16:
			return time.Unix(int64(binary.NativeEndian.Uint64(d)), int64(binary.NativeEndian.Uint64(d[8:])))
		case unsafe.Sizeof(syscall.Timespec{}) == 8 && len(d) >= 8:
			return time.Unix(int64(int32(binary.NativeEndian.Uint32(d))), int64(binary.NativeEndian.Uint32(d[4:])))
		}
	}
	return time.Time{}
}
