// Package testport hands out loopback ports for tests that must name a
// port before something binds it: the agent or SIPp started as a process,
// a doctor checking a port it was told.
//
// Binding ":0" and closing again, the usual trick, failed in CI: the port
// came from the kernel's ephemeral range, so between the probe and the
// real bind it could be handed to a socket of a test running beside this
// one (an outgoing connection, another ":0"). Ports here are drawn below
// that range (32768 and up by default), where the kernel hands out
// nothing on its own, and each is claimed with a lock file held until the
// process ends, so test binaries running in parallel (go test runs
// packages at once) never draw the same one.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

const (
	first = 20000
	count = 12000 // up to 31999
)

var given struct {
	sync.Mutex
	locks map[int]*os.File // held for the life of the process
}

// Free returns a port that is free on 127.0.0.1 for both UDP and TCP, that
// no other process using this package holds, and that it has not returned
// before in this process.
func Free(t testing.TB) int {
	t.Helper()
	given.Lock()
	defer given.Unlock()
	if given.locks == nil {
		given.locks = map[int]*os.File{}
	}
	for range 500 {
		port := first + rand.IntN(count)
		if given.locks[port] != nil {
			continue
		}
		f, err := claim(port)
		if err != nil {
			continue
		}
		if !bindable(port) {
			f.Close() // the lock goes with it
			continue
		}
		given.locks[port] = f
		return port
	}
	t.Fatal("testport: no port free for both UDP and TCP")
	return 0
}

func lockPath(port int) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("leadport-testport-%d.lock", port))
}

// claim takes the lock file of port, without waiting.
func claim(port int) (*os.File, error) {
	f, err := os.OpenFile(lockPath(port), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// bindable says whether nothing holds port on 127.0.0.1, UDP or TCP.
func bindable(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	u, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return false
	}
	defer u.Close()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}
