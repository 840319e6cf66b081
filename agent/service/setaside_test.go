package service

import (
	"errors"
	"os"
	"testing"
)

// asideSuffix marks a directory that a test moved out of its way; the
// package test (scripts/test-packages.sh) uses the same suffix.
const asideSuffix = ".set-aside-by-test"

// setAside moves dir, a system path that the test is about to create and
// delete (a `make run` as root leaves /var/lib/leadport-agent), out of the
// way, and puts it back when the test ends, so that `make run` and `make
// test` never lose each other's data. A test killed before its cleanup
// leaves dir+asideSuffix behind; the next run puts it back first. Register
// it before the test's own clean-up, which then runs first.
func setAside(t *testing.T, dir string) {
	t.Helper()
	aside := dir + asideSuffix
	if exists(aside) {
		if exists(dir) {
			t.Fatalf("both %s and %s exist: a test that did not finish set one aside; keep the one you want and remove the other", dir, aside)
		}
		if err := os.Rename(aside, dir); err != nil {
			t.Fatal(err)
		}
		t.Logf("put back %s, set aside by a test that did not finish", dir)
	}
	if !exists(dir) {
		return
	}
	if err := agentHoldsStore(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	t.Logf("set %s aside for the test", dir)
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing the test's %s: %v", dir, err)
			return
		}
		if err := os.Rename(aside, dir); err != nil {
			t.Errorf("putting back %s: %v", dir, err)
		}
	})
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, os.ErrNotExist)
}
