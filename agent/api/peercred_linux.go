//go:build linux

package api

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCreds asks the kernel who connected (SO_PEERCRED): the uid and gid
// the peer process had when it called connect.
func peerCreds(c *net.UnixConn) (creds, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return creds{}, fmt.Errorf("peer credentials: %w", err)
	}
	var uc *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return creds{}, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return creds{}, fmt.Errorf("peer credentials: SO_PEERCRED: %w", serr)
	}
	return creds{uid: int(uc.Uid), gid: int(uc.Gid)}, nil
}
