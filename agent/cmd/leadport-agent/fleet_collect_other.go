//go:build !unix

package main

import (
	"io"
	"os"
	"path/filepath"
)

// lockDir only marks dir: without flock, keeping two collectors apart is
// the operator's (one --out per instance).
func lockDir(dir string) (io.Closer, error) {
	return os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
}

// syncDir does nothing: Windows cannot fsync a directory, and NTFS
// journals its entries.
func syncDir(string) error { return nil }
