// Package storetest opens stores for tests in a temporary directory and, on
// cleanup, checks them the way an auditor would: bbolt's consistency check,
// and for every subject the test erased, that nothing of it can be read
// with the device key in hand (store.Scan: every page, free ones included)
// and that no file in the data directory spells it in clear.
//
// Personal fields are sealed, so a search for a number in clear finds
// nothing whether or not it was erased; only the scan with the key can
// fail. EraseSubject therefore scans before each erase too: a scan that
// finds nothing of what the erase then removes is blind, and says so.
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
	opts   store.Options
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
	db := &DB{Store: s, Dir: dir, opts: o, t: t}
	t.Cleanup(func() {
		if err := s.Check(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("store consistency check: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
		for _, subj := range db.erased {
			db.AssertErased(subj)
		}
	})
	return db
}

// EraseSubject erases the subject and remembers it, so cleanup proves it
// left no trace. It scans first: an erase that changed records the scan
// did not see would make the check at cleanup worthless.
func (db *DB) EraseSubject(subject string) (store.EraseResult, error) {
	db.t.Helper()
	// Errorf, not Fatalf: a command handler may erase from its own
	// goroutine.
	before, serr := store.Scan(db.opts, subject)
	if serr != nil {
		db.t.Errorf("scan before erasing %s: %v", phone.Mask(subject), serr)
	}
	res, err := db.Store.EraseSubject(subject)
	if err == nil {
		db.erased = append(db.erased, subject)
		if serr == nil && res != (store.EraseResult{}) && (len(before.Keys) == 0 || len(before.Fields) == 0) {
			db.t.Errorf("the erase of %s changed records (%+v), but the scan before it found %d keys and %d fields of the subject: the scan is blind",
				phone.Mask(subject), res, len(before.Keys), len(before.Fields))
		}
	}
	return res, err
}

// Scan runs the forensic scan (store.Scan) on the store's files as they
// are on disk now, open or closed.
func (db *DB) Scan(subject string) *store.ScanReport {
	db.t.Helper()
	return scan(db.t, db.opts, subject)
}

// AssertFound fails the test unless the scan reads the subject every way
// it looks: its digest, a wrapped key of it, a sealed field of it opened.
// An erase test calls it before the erase, so that AssertErased after it
// is shown able to fail.
func (db *DB) AssertFound(subject string) *store.ScanReport {
	db.t.Helper()
	return assertFound(db.t, db.opts, subject)
}

// AssertErased fails the test if the scan reads anything of the subject
// on any page of the store, free ones included, or if any file in the
// data directory spells it in clear.
func (db *DB) AssertErased(subject string) {
	db.t.Helper()
	assertErased(db.t, db.opts, subject)
}

// AssertFound is DB.AssertFound for the store in dir, opened or not, with
// the device key in its default place and DefaultCountry.
func AssertFound(t testing.TB, dir, subject string) *store.ScanReport {
	t.Helper()
	return assertFound(t, store.Options{Dir: dir, DefaultCountry: DefaultCountry}, subject)
}

// AssertErased is DB.AssertErased for the store in dir, opened or not,
// with the device key in its default place and DefaultCountry.
func AssertErased(t testing.TB, dir, subject string) {
	t.Helper()
	assertErased(t, store.Options{Dir: dir, DefaultCountry: DefaultCountry}, subject)
}

func scan(t testing.TB, o store.Options, subject string) *store.ScanReport {
	t.Helper()
	rep, err := store.Scan(o, subject)
	if err != nil {
		t.Fatalf("scan for %s: %v", phone.Mask(subject), err)
	}
	return rep
}

func assertFound(t testing.TB, o store.Options, subject string) *store.ScanReport {
	t.Helper()
	rep := scan(t, o, subject)
	if len(rep.Digests) == 0 || len(rep.Keys) == 0 || len(rep.Fields) == 0 {
		t.Errorf("the scan reads %d digests, %d keys and %d fields of %s, want some of each: it could not tell an erase happened",
			len(rep.Digests), len(rep.Keys), len(rep.Fields), phone.Mask(subject))
	}
	return rep
}

func assertErased(t testing.TB, o store.Options, subject string) {
	t.Helper()
	rep := scan(t, o, subject)
	for _, c := range []struct {
		what   string
		traces []store.Trace
	}{
		{"its keyed digest", rep.Digests},
		{"a wrapped key of it that unwraps", rep.Keys},
		{"a sealed field of it that opens", rep.Fields},
		{"it in clear", rep.Clear},
	} {
		for i, tr := range c.traces {
			if i == 3 {
				t.Errorf("... %d more", len(c.traces)-i)
				break
			}
			t.Errorf("erased subject %s: the scan reads %s: %s", phone.Mask(subject), c.what, tr)
		}
	}
	AssertNoTrace(t, o.Dir, subject, nil)
}

// AssertNoTrace scans every byte of every file in the data directory for
// the subject: each textual form of the number (see phone.Variants) and
// digest, the keyed hash the store filed it under (nil: take it from the
// open store). A digest left behind would mean a page that compaction
// missed still holds the subject's key or index entries. The number in
// clear is never on disk, erased or not; AssertErased is the check an
// erase needs.
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
		// The agent's API socket may lie here: only files have bytes.
		if err != nil || !d.Type().IsRegular() {
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

// Backlog is how many records wait in the outboxes, all types together.
func (db *DB) Backlog(t testing.TB) int {
	t.Helper()
	st, err := db.Stats()
	if err != nil {
		t.Fatalf("store stats: %v", err)
	}
	n := 0
	for _, ts := range st.Outbox {
		n += ts.Pending
	}
	return n
}
