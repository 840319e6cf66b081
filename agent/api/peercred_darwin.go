//go:build darwin

package api

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCreds asks the kernel who connected (LOCAL_PEERCRED): the effective
// uid and the groups of the peer when it called connect, the first group
// being the effective gid.
func peerCreds(c *net.UnixConn) (creds, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return creds{}, fmt.Errorf("peer credentials: %w", err)
	}
	var xu *unix.Xucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		xu, serr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return creds{}, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return creds{}, fmt.Errorf("peer credentials: LOCAL_PEERCRED: %w", serr)
	}
	if xu.Ngroups < 1 || int(xu.Ngroups) > len(xu.Groups) {
		return creds{}, fmt.Errorf("peer credentials: LOCAL_PEERCRED gave %d groups", xu.Ngroups)
	}
	c2 := creds{uid: int(xu.Uid), gid: int(xu.Groups[0])}
	for _, g := range xu.Groups[1:xu.Ngroups] {
		c2.groups = append(c2.groups, int(g))
	}
	return c2, nil
}
