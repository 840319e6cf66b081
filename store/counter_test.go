package store_test

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store/storetest"
)

func TestReserveCounter(t *testing.T) {
	dir := t.TempDir()
	s := storetest.OpenDir(t, dir)
	first, err := s.ReserveCounter("passport", 10)
	if err != nil || first != 1 {
		t.Fatalf("first reservation: %d, %v; want 1", first, err)
	}
	if next, err := s.ReserveCounter("passport", 5); err != nil || next != 11 {
		t.Fatalf("second reservation: %d, %v; want 11", next, err)
	}
	if other, err := s.ReserveCounter("other", 1); err != nil || other != 1 {
		t.Fatalf("another counter: %d, %v; want 1", other, err)
	}
	if _, err := s.ReserveCounter("passport", 0); err == nil {
		t.Error("an empty range was reserved")
	}
	// Erase-all keeps the counter: a verifier has seen its values.
	if _, err := s.EraseAll(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = storetest.OpenDir(t, dir)
	if next, err := s.ReserveCounter("passport", 1); err != nil || next != 16 {
		t.Fatalf("after erase-all and a restart: %d, %v; want 16", next, err)
	}
}

// TestCounterSIGKILL kills a process reserving counter values at random
// moments: after each restart the next value is above every value the
// killed process had been handed.
func TestCounterSIGKILL(t *testing.T) {
	dir := t.TempDir()
	var highest uint64
	for iter := range 10 {
		cmd, lines := child(t, "counter", dir, iter)
		got := 0
		deadline := time.After(20 * time.Second)
	read:
		for got < 50+iter*7 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child %d ended early", iter)
				}
				v, ok := strings.CutPrefix(l, "ctr ")
				if !ok {
					continue
				}
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				if n <= highest {
					t.Fatalf("child %d was handed %d, not above %d from before", iter, n, highest)
				}
				highest = n
				got++
			case <-deadline:
				break read
			}
		}
		if got == 0 {
			t.Fatalf("child %d reserved nothing", iter)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	s := storetest.OpenDir(t, dir)
	next, err := s.ReserveCounter("passport", 1)
	if err != nil || next <= highest {
		t.Fatalf("after the last SIGKILL: %d, %v; want above %d", next, err, highest)
	}
	t.Logf("highest value handed out %d, next %d", highest, next)
}
