package testport

import (
	"net"
	"os/exec"
	"strconv"
	"testing"
)

// TestFree: ports are below the ephemeral range, bindable, never given
// twice in a process, and held against other processes.
func TestFree(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := Free(t)
		if p < first || p >= first+count {
			t.Fatalf("port %d outside %d-%d", p, first, first+count-1)
		}
		if seen[p] {
			t.Fatalf("port %d given twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
	// Another process cannot claim a port this one holds. flock(1) is
	// util-linux's, on every machine the tests run on.
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("no flock(1) to play the other process")
	}
	for p := range seen {
		if err := exec.Command("flock", "-n", lockPath(p), "true").Run(); err == nil {
			t.Errorf("another process claimed port %d, held by this one", p)
		}
		break
	}
}
