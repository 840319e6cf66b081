// Package storetest opens stores for tests in a temporary directory and, on
// cleanup, checks them the way an auditor would: bbolt's consistency check,
// and for every subject the test erased, that no representation of it is
// left anywhere in the data directory's bytes.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
)

// DefaultCountry is the calling code test stores normalise with.
const DefaultCountry = "1"

// DB is a store under test.
type DB struct {
	*store.Store
	Dir    string
	t      testing.TB
	erased []string
}

// Open opens a store in a new temporary directory. opt may adjust the
// options before opening.
func Open(t testing.TB, opt ...func(*store.Options)) *DB {
	t.Helper()
	return OpenDir(t, t.TempDir(), opt...)
}

// OpenDir opens a store in dir, for tests that reopen the same directory.
func OpenDir(t testing.TB, dir string, opt ...func(*store.Options)) *DB {
	t.Helper()
	o := store.Options{Dir: dir, DefaultCountry: DefaultCountry, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range opt {
		f(&o)
	}
	s, err := store.Open(o)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	db := &DB{Store: s, Dir: dir, t: t}
	t.Cleanup(func() {
		if err := s.Check(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("store consistency check: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
		for _, subj := range db.erased {
			db.AssertNoTrace(subj, nil)
		}
	})
	return db
}

// EraseSubject erases the subject and remembers it, so cleanup proves it
// left no trace.
func (db *DB) EraseSubject(subject string) (store.EraseResult, error) {
	res, err := db.Store.EraseSubject(subject)
	if err == nil {
		db.erased = append(db.erased, subject)
	}
	return res, err
}

// AssertNoTrace scans every byte of every file in the data directory for
// the subject: each textual form of the number (see phone.Variants) and
// digest, the keyed hash the store filed it under (nil: take it from the
// open store). A digest left behind would mean a page that compaction
// missed still holds the subject's key or index entries.
func (db *DB) AssertNoTrace(subject string, digest []byte) {
	db.t.Helper()
	if digest == nil && db.Store != nil {
		digest = db.SubjectDigest(subject)
	}
	AssertNoTrace(db.t, db.Dir, subject, digest)
}

// AssertNoTrace is DB.AssertNoTrace for a directory whose store is closed.
func AssertNoTrace(t testing.TB, dir, subject string, digest []byte) {
	t.Helper()
	needles := [][]byte{[]byte(subject)}
	if n, err := phone.Normalize(subject, DefaultCountry); err == nil {
		for _, v := range phone.Variants(n, DefaultCountry) {
			needles = append(needles, []byte(v))
		}
	}
	if len(digest) > 0 {
		needles = append(needles, digest)
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for j, n := range needles {
			i := bytes.Index(data, n)
			switch {
			case i < 0:
			case len(digest) > 0 && j == len(needles)-1:
				t.Errorf("%s still holds the keyed digest of an erased subject at byte %d: a page kept its key or index entry", path, i)
			default:
				t.Errorf("%s still holds an erased subject at byte %d (%s)", path, i, phone.Mask(string(n)))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", dir, err)
	}
}

// FillUsage appends n answered usage records, the i-th with remote(i) as
// its other party, in commits of 1,000, and returns their ids in order.
func FillUsage(t testing.TB, s *store.Store, n int, remote func(i int) string) []string {
	t.Helper()
	var ids []string
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	for i := 0; i < n; i += 1000 {
		var batch []store.Payload
		for j := i; j < min(n, i+1000); j++ {
			batch = append(batch, &store.Usage{Line: "+15551230001", Direction: "outbound", Remote: remote(j),
				StartedAt: at, AnsweredAt: at.Add(time.Second), EndedAt: at.Add(time.Minute), DurationS: 59,
				Disposition: "answered", FinalStatus: 200})
		}
		got, err := s.Append(context.Background(), batch...)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	return ids
}
