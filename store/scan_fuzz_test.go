package store

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// FuzzScanPages feeds the forensic scan damaged and foreign files: it
// reads every length from the file, so it must see less, never panic or
// allocate without bound. Seeds are a real store file, whole and cut.
func FuzzScanPages(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(Options{Dir: dir, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	subject := "+15551234567"
	if _, err := s.Append(context.Background(),
		&Usage{Line: "+15551230001", Direction: "outbound", Remote: subject, DurationS: 1, Disposition: "answered"},
		&Receipt{CommandID: "x", Status: "done", Subject: subject, Result: []byte(`{"remote":"+15551234567"}`)}); err != nil {
		f.Fatal(err)
	}
	if _, err := s.Export(subject); err != nil { // the index and key table
		f.Fatal(err)
	}
	s.Close()
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	master, err := os.ReadFile(filepath.Join(dir, KeyFileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add(data[:4096+64])
	f.Fuzz(func(t *testing.T, b []byte) {
		sc := newScanner(Options{DefaultCountry: "1"}, master, subject)
		_ = sc.file(bytes.NewReader(b), int64(len(b)), FileName, sc.scanFile)
	})
}
