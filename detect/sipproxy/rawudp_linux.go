//go:build linux && !386

package sipproxy

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"
)

// On linux/386 the socket calls go through socketcall(2), so that build
// keeps net.UDPConn (rawudp_other.go).

// rawUDP reads and writes a UDP socket's datagrams with raw system calls
// inside the runtime poller's callbacks (syscall.RawConn), instead of
// through net.UDPConn.
//
// Why: net.UDPConn enters every recvmsg and sendto through the runtime's
// blocking-syscall path, and the first such call after the process went
// idle wakes the runtime's monitor thread (sysmon), which then polls every
// 20 µs until the process is idle again. A PBX's tens of calls a second
// make the agent go idle between nearly every message, so at 100 calls/s
// that thread was a fifth of the agent's CPU (perf), on a machine where a
// context switch is dear. The socket is non-blocking and the calls are
// made with MSG_DONTWAIT: they never block, which is what RawSyscall
// requires; when there is nothing to read, the callback says so and the
// poller parks the goroutine as net.UDPConn would.
type rawUDP struct {
	rc syscall.RawConn
	v6 bool // an AF_INET6 socket (dual stack when bound to a wildcard)
}

func newRawUDP(c *net.UDPConn) (*rawUDP, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawUDP{rc: rc}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var sa syscall.Sockaddr
		sa, serr = syscall.Getsockname(int(fd))
		_, r.v6 = sa.(*syscall.SockaddrInet6)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, os.NewSyscallError("getsockname", serr)
	}
	return r, nil
}

// readMsg is ReadMsgUDP: the datagram into b, control messages into oob,
// and the sender as net.UDPConn gives it (a 16-byte address from an
// AF_INET6 socket, v4-mapped for IPv4 senders).
func (r *rawUDP) readMsg(b, oob []byte) (n, oobn int, from *net.UDPAddr, err error) {
	var sa syscall.RawSockaddrAny
	var iov syscall.Iovec
	var msg syscall.Msghdr
	var buf byte
	if len(b) > 0 {
		iov.Base = &b[0]
	} else {
		iov.Base = &buf
	}
	iov.SetLen(len(b))
	var errno syscall.Errno
	rerr := r.rc.Read(func(fd uintptr) bool {
		msg = syscall.Msghdr{Name: (*byte)(unsafe.Pointer(&sa)), Namelen: syscall.SizeofSockaddrAny, Iov: &iov, Iovlen: 1}
		if len(oob) > 0 {
			msg.Control = &oob[0]
			msg.SetControllen(len(oob))
		}
		r1, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), syscall.MSG_DONTWAIT)
		switch e {
		case syscall.EAGAIN:
			return false // the poller waits for the next datagram
		case syscall.EINTR:
			return false // not expected with MSG_DONTWAIT; tried again after the poller says readable
		}
		n, errno = int(r1), e
		return true
	})
	if rerr != nil {
		return 0, 0, nil, rerr
	}
	if errno != 0 {
		return 0, 0, nil, &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvmsg", errno)}
	}
	oobn = int(msg.Controllen)
	switch sa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&sa))
		from = net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(p.Addr), ntohs(p.Port)))
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&sa))
		ip := netip.AddrFrom16(p.Addr)
		if p.Scope_id != 0 {
			ip = ip.WithZone(zoneName(int(p.Scope_id)))
		}
		from = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, ntohs(p.Port)))
	}
	return n, oobn, from, nil
}

// writeTo is WriteTo for a *net.UDPAddr, with the same address handling
// as net.UDPConn: IPv4 destinations go v4-mapped on an AF_INET6 socket.
func (r *rawUDP) writeTo(b []byte, to *net.UDPAddr) (int, error) {
	ap := to.AddrPort()
	var sa4 syscall.RawSockaddrInet4
	var sa6 syscall.RawSockaddrInet6
	var sa unsafe.Pointer
	var salen uintptr
	switch ip := ap.Addr(); {
	case !ip.IsValid():
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: to, Err: errMissingAddress}
	case r.v6:
		sa6.Family = syscall.AF_INET6
		sa6.Port = htons(ap.Port())
		sa6.Addr = ip.As16()
		if z := ip.Zone(); z != "" {
			sa6.Scope_id = uint32(zoneIndex(z))
		}
		sa, salen = unsafe.Pointer(&sa6), syscall.SizeofSockaddrInet6
	case ip.Unmap().Is4():
		sa4.Family = syscall.AF_INET
		sa4.Port = htons(ap.Port())
		sa4.Addr = ip.Unmap().As4()
		sa, salen = unsafe.Pointer(&sa4), syscall.SizeofSockaddrInet4
	default:
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: to, Err: &net.AddrError{Err: "non-IPv4 address", Addr: ip.String()}}
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	var n int
	var errno syscall.Errno
	werr := r.rc.Write(func(fd uintptr) bool {
		r1, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(p), uintptr(len(b)), syscall.MSG_DONTWAIT, uintptr(sa), salen)
		if e == syscall.EAGAIN {
			return false // the socket buffer is full: the poller waits for room
		}
		n, errno = int(r1), e
		return true
	})
	if werr != nil {
		return 0, werr
	}
	if errno != 0 {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: to, Err: os.NewSyscallError("sendto", errno)}
	}
	return n, nil
}

var errMissingAddress = errors.New("missing address")

// ntohs and htons turn a port between network and host byte order (the
// agent also runs on big-endian MIPS).
func ntohs(v uint16) uint16 {
	return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&v))[:])
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return *(*uint16)(unsafe.Pointer(&b))
}

// Interface names by index for IPv6 zones, as net keeps them; link-local
// peers are rare, and an interface lookup is a netlink round trip.
var zones struct {
	sync.Mutex
	byIndex map[int]string
}

func zoneName(i int) string {
	zones.Lock()
	defer zones.Unlock()
	if name, ok := zones.byIndex[i]; ok {
		return name
	}
	name := strconv.Itoa(i)
	if ifi, err := net.InterfaceByIndex(i); err == nil {
		name = ifi.Name
	}
	if zones.byIndex == nil || len(zones.byIndex) >= 64 {
		zones.byIndex = make(map[int]string)
	}
	zones.byIndex[i] = name
	return name
}

func zoneIndex(z string) int {
	if i, err := strconv.Atoi(z); err == nil {
		return i
	}
	if ifi, err := net.InterfaceByName(z); err == nil {
		return ifi.Index
	}
	return 0
}
