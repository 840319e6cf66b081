package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leadport/leadport-agent/store"
)

// mountTmpfs mounts a small tmpfs of its own on a new directory, so the
// test can fill it or make it read-only like a failing disk would be.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		// make test runs as root in CI, where a full and a read-only disk
		// must be tested, not skipped.
		if os.Getenv("LEADPORT_E2E") == "1" {
			t.Fatalf("cannot mount a tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func remount(t *testing.T, dir, mode string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v: %s", dir, mode, err, out)
	}
}

func openIn(t *testing.T, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(store.Options{Dir: dir, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

// readBack reopens dir and checks that every id in want reads back with its
// remote party.
func readBack(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	s := openIn(t, dir)
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
	recs, err := s.Pending(store.TypeUsage, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range recs {
		p, err := r.Decode()
		if err != nil {
			t.Fatal(err)
		}
		got[r.ID] = p.(*store.Usage).Remote
	}
	for id, remote := range want {
		if got[id] != remote {
			t.Errorf("record %s = %q after the failure, want %q", id, got[id], remote)
		}
	}
}

func TestFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "2m")
	s := openIn(t, dir)
	want := map[string]string{}
	var err error
	for i := 0; i < 100_000; i++ {
		remote := fmt.Sprintf("+1555%07d", i)
		var ids []string
		if ids, err = s.Append(context.Background(), usage(remote)); err != nil {
			break
		}
		want[ids[0]] = remote
	}
	if err == nil {
		t.Fatal("a 2 MiB disk never filled up")
	}
	if errors.Is(err, store.ErrFull) {
		t.Fatalf("got the size cap, not the disk: %v", err)
	}
	t.Logf("%d records stored, then: %v", len(want), err)
	// The store stays usable: a later append may fit in pages the failed
	// transaction gave back, and what it holds stays readable.
	if ids, err := s.Append(context.Background(), usage("+15551234567")); err == nil {
		want[ids[0]] = "+15551234567"
	}
	if _, err := s.Pending(store.TypeUsage, store.ReadOptions{Limit: 10}); err != nil {
		t.Errorf("reading a store on a full disk: %v", err)
	}
	s.Close()
	readBack(t, dir, want)
}

// A data directory that went read-only (a filesystem remounted after
// errors, a mistaken mount option) stops the agent with a clear error at
// start, and leaves every byte of the store as it was.
func TestReadOnlyDisk(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	s := openIn(t, dir)
	want := map[string]string{}
	for i := range 200 {
		remote := fmt.Sprintf("+1555%07d", i)
		ids, err := s.Append(context.Background(), usage(remote))
		if err != nil {
			t.Fatal(err)
		}
		want[ids[0]] = remote
	}
	s.Close()
	before, err := os.ReadFile(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	// Linux refuses to remount read-only under a file open for writing,
	// so the store is closed first: this is the restart after the fact.
	remount(t, dir, "ro")
	_, err = store.Open(store.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("open on a read-only disk: %v, want an error saying so", err)
	}
	after, err := os.ReadFile(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("the failed open changed the store file")
	}
	remount(t, dir, "rw")
	readBack(t, dir, want)
}
