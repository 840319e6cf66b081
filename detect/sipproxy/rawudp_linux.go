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
	// The reader's state, kept so that a read allocates nothing of its
	// own: a closure handed to RawConn.Read escapes with every variable it
	// captures. One reader (sipgo's read loop); mu keeps it honest.
	mu sync.Mutex
	rd rawRead
}

// rawRead is one recvmsg's arguments and results; recv is its callback.
type rawRead struct {
	sa    syscall.RawSockaddrAny
	iov   syscall.Iovec
	msg   syscall.Msghdr
	none  byte // what iov points at for an empty buffer
	n     int
	errno syscall.Errno
	recv  func(fd uintptr) bool // rd.call, made once
}

func (rd *rawRead) call(fd uintptr) bool {
	r1, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&rd.msg)), syscall.MSG_DONTWAIT)
	if e == syscall.EAGAIN || e == syscall.EINTR {
		return false // nothing to read: the poller waits for the next datagram
	}
	rd.n, rd.errno = int(r1), e
	return true
}

// rawWrite is one sendto's arguments and results; writers are many, so
// these go round in a pool.
type rawWrite struct {
	sa4   syscall.RawSockaddrInet4
	sa6   syscall.RawSockaddrInet6
	sa    unsafe.Pointer
	salen uintptr
	p     unsafe.Pointer
	len   int
	n     int
	errno syscall.Errno
	send  func(fd uintptr) bool // w.call, made once
}

func (w *rawWrite) call(fd uintptr) bool {
	r1, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(w.p), uintptr(w.len), syscall.MSG_DONTWAIT, uintptr(w.sa), w.salen)
	if e == syscall.EAGAIN {
		return false // the socket buffer is full: the poller waits for room
	}
	w.n, w.errno = int(r1), e
	return true
}

var rawWrites = sync.Pool{New: func() any {
	w := &rawWrite{}
	w.send = w.call
	return w
}}

func newRawUDP(c *net.UDPConn) (*rawUDP, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawUDP{rc: rc}
	r.rd.recv = r.rd.call
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
	r.mu.Lock()
	defer r.mu.Unlock()
	rd := &r.rd
	rd.iov.Base = &rd.none
	if len(b) > 0 {
		rd.iov.Base = &b[0]
	}
	rd.iov.SetLen(len(b))
	rd.msg = syscall.Msghdr{Name: (*byte)(unsafe.Pointer(&rd.sa)), Namelen: syscall.SizeofSockaddrAny, Iov: &rd.iov, Iovlen: 1}
	if len(oob) > 0 {
		rd.msg.Control = &oob[0]
		rd.msg.SetControllen(len(oob))
	}
	rd.errno = 0
	rerr := r.rc.Read(rd.recv)
	// Not to keep the caller's buffers reachable from here.
	rd.iov.Base, rd.msg.Control = nil, nil
	if rerr != nil {
		return 0, 0, nil, rerr
	}
	if rd.errno != 0 {
		return 0, 0, nil, &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvmsg", rd.errno)}
	}
	switch rd.sa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&rd.sa))
		from = net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(p.Addr), ntohs(p.Port)))
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&rd.sa))
		ip := netip.AddrFrom16(p.Addr)
		if p.Scope_id != 0 {
			ip = ip.WithZone(zoneName(int(p.Scope_id)))
		}
		from = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, ntohs(p.Port)))
	}
	return rd.n, int(rd.msg.Controllen), from, nil
}

// writeTo is WriteTo for a *net.UDPAddr, with the same address handling
// as net.UDPConn: IPv4 destinations go v4-mapped on an AF_INET6 socket.
func (r *rawUDP) writeTo(b []byte, to *net.UDPAddr) (int, error) {
	ap := to.AddrPort()
	w := rawWrites.Get().(*rawWrite)
	defer rawWrites.Put(w)
	switch ip := ap.Addr(); {
	case !ip.IsValid():
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: to, Err: errMissingAddress}
	case r.v6:
		w.sa6 = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Port: htons(ap.Port()), Addr: ip.As16()}
		if z := ip.Zone(); z != "" {
			w.sa6.Scope_id = uint32(zoneIndex(z))
		}
		w.sa, w.salen = unsafe.Pointer(&w.sa6), syscall.SizeofSockaddrInet6
	case ip.Unmap().Is4():
		w.sa4 = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Port: htons(ap.Port()), Addr: ip.Unmap().As4()}
		w.sa, w.salen = unsafe.Pointer(&w.sa4), syscall.SizeofSockaddrInet4
	default:
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: to, Err: &net.AddrError{Err: "non-IPv4 address", Addr: ip.String()}}
	}
	w.p, w.len, w.errno = nil, len(b), 0
	if len(b) > 0 {
		w.p = unsafe.Pointer(&b[0])
	}
	werr := r.rc.Write(w.send)
	w.p = nil // not to keep the caller's buffer reachable from the pool
	if werr != nil {
		return 0, werr
	}
	if w.errno != 0 {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: to, Err: os.NewSyscallError("sendto", w.errno)}
	}
	return w.n, nil
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
