package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

// The scan finds a subject wherever the device key reads it, in use or on
// a free page, and finds nothing where nothing of it is held.
func TestScan(t *testing.T) {
	const subject, other = "+15551234567", "+15557654321"
	fillOthers := func(t *testing.T, db *storetest.DB) {
		storetest.FillUsage(t, db.Store, 200, func(i int) string { return fmt.Sprintf("+1555000%04d", i) })
	}
	type want struct {
		digests, keys, fields int  // at least
		none                  bool // nothing at all
		// free: every trace is on a free page; else some field is on a
		// page in use (older copies of a page may be free).
		free     bool
		keyTable bool // a key is found in the key table
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, db *storetest.DB)
		want  want
	}{{
		// One field in a usage record (written as the PBX wrote it),
		// two in a consent, one of a violation's two numbers.
		name: "held",
		setup: func(t *testing.T, db *storetest.DB) {
			mustAppend(t, db, usage("(555) 123-4567"), consent(subject), violation(subject, other))
			fillOthers(t, db)
		},
		want: want{digests: 4, keys: 4, fields: 4},
	}, {
		name: "merged into the index and key table",
		setup: func(t *testing.T, db *storetest.DB) {
			mustAppend(t, db, usage(subject))
			if _, err := db.Export(other); err != nil { // merges
				t.Fatal(err)
			}
		},
		// The record part, its index entry and the key table entry.
		want: want{digests: 3, keys: 2, fields: 1, keyTable: true},
	}, {
		// An export receipt of another subject is sealed under that
		// subject's key, yet names this one.
		name: "named in another subject's field",
		setup: func(t *testing.T, db *storetest.DB) {
			mustAppend(t, db, &store.Receipt{CommandID: "export-1", Status: "done", Subject: other,
				Result: json.RawMessage(`{"records":[{"remote":"+15557654321"},{"remote":"+15551234567"}]}`)})
		},
		want: want{fields: 1},
	}, {
		// Acknowledged records leave the tree; their pages keep the
		// bytes until reused or scrubbed.
		name: "acknowledged, on free pages",
		setup: func(t *testing.T, db *storetest.DB) {
			fillOthers(t, db)
			ids := mustAppend(t, db, usage(subject), consent(subject))
			fillOthers(t, db)
			if n, err := db.Ack(ids...); err != nil || n != 2 {
				t.Fatalf("ack = %d, %v", n, err)
			}
		},
		want: want{digests: 3, keys: 3, fields: 3, free: true},
	}, {
		name: "erased",
		setup: func(t *testing.T, db *storetest.DB) {
			mustAppend(t, db, usage(subject), consent(subject), violation(subject, other))
			fillOthers(t, db)
			if _, err := db.EraseSubject(subject); err != nil {
				t.Fatal(err)
			}
		},
		want: want{none: true},
	}, {
		name:  "never held",
		setup: fillOthers,
		want:  want{none: true},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := storetest.Open(t)
			c.setup(t, db)
			rep := db.Scan(subject)
			if rep.KeysUnwrapped == 0 || rep.FieldsOpened == 0 {
				t.Errorf("the key unwrapped %d keys and opened %d fields: it opens nothing, so it finds nothing", rep.KeysUnwrapped, rep.FieldsOpened)
			}
			if rep.Unopened != 0 {
				t.Errorf("%d sealed fields did not open", rep.Unopened)
			}
			if len(rep.Clear) != 0 {
				t.Errorf("the number is in clear: %+v", rep.Clear)
			}
			if c.want.none {
				if rep.Found() {
					t.Errorf("found %d digests, %d keys, %d fields; want nothing", len(rep.Digests), len(rep.Keys), len(rep.Fields))
				}
				return
			}
			if len(rep.Digests) < c.want.digests || len(rep.Keys) < c.want.keys || len(rep.Fields) < c.want.fields {
				t.Errorf("found %d digests, %d keys, %d fields; want at least %d, %d, %d",
					len(rep.Digests), len(rep.Keys), len(rep.Fields), c.want.digests, c.want.keys, c.want.fields)
			}
			inUse := 0
			for _, tr := range append(append(rep.Digests, rep.Keys...), rep.Fields...) {
				if tr.Free != c.want.free && c.want.free {
					t.Errorf("%+v is on a page in use, want only free pages", tr)
				}
				if !tr.Free && tr.Field != "" {
					inUse++
				}
				if tr.File != store.FileName || tr.Page < 2 || tr.Page >= rep.Pages {
					t.Errorf("%+v: not a data page of %s (%d pages)", tr, store.FileName, rep.Pages)
				}
			}
			if c.want.keyTable && !slices.ContainsFunc(rep.Keys, func(tr store.Trace) bool { return tr.In == "key table" }) {
				t.Errorf("no key found in the key table: %+v", rep.Keys)
			}
			if !c.want.free && inUse < c.want.fields {
				t.Errorf("%d fields on pages in use, want at least %d", inUse, c.want.fields)
			}
			for _, tr := range rep.Fields {
				if tr.Record == "" || tr.Type == "" || tr.Field == "" {
					t.Errorf("field trace %+v does not name its record, type and field", tr)
				}
			}
		})
	}
}

// A compaction copy that a crash left behind is read too: it may hold
// everything the store held before the erase.
func TestScanReadsCompactionLeftover(t *testing.T) {
	db := storetest.Open(t)
	const subject = "+15551234567"
	mustAppend(t, db, usage(subject), consent(subject))
	before, err := os.ReadFile(filepath.Join(db.Dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.EraseSubject(subject); err != nil {
		t.Fatal(err)
	}
	db.AssertErased(subject)
	db.Close()
	if err := os.WriteFile(filepath.Join(db.Dir, store.FileName+".compact"), before, 0o600); err != nil {
		t.Fatal(err)
	}
	rep := db.Scan(subject)
	if len(rep.Files) != 2 || len(rep.Fields) != 3 {
		t.Fatalf("read %v, found %d fields; want both files read and the 3 fields found", rep.Files, len(rep.Fields))
	}
	for _, tr := range rep.Fields {
		if tr.File != store.FileName+".compact" {
			t.Errorf("field found in %s, want only in the leftover copy", tr.File)
		}
	}
	// The cleanup's check of the erase must not pass over the leftover.
	os.Remove(filepath.Join(db.Dir, store.FileName+".compact"))
}

// A key that is not the store's would open nothing and so find nothing:
// the scan refuses it instead of reporting the subject gone.
func TestScanRefusesWrongKey(t *testing.T) {
	db := storetest.Open(t)
	mustAppend(t, db, usage("+15551234567"))
	wrong := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(wrong, make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := store.Scan(store.Options{Dir: db.Dir, KeyFile: wrong, DefaultCountry: storetest.DefaultCountry}, "+15551234567")
	if !errors.Is(err, store.ErrWrongKey) {
		t.Errorf("scan with another key: %v, want ErrWrongKey", err)
	}
	if _, err := store.Scan(store.Options{Dir: t.TempDir(), KeyFile: wrong}, "+15551234567"); err == nil {
		t.Errorf("scan of a directory without a store succeeded")
	}
}

// The scan reads a store while it is open and being written, as the CLI
// does beside a running agent.
func TestScanWhileAppending(t *testing.T) {
	db := storetest.Open(t)
	const subject = "+15551234567"
	mustAppend(t, db, usage(subject))
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := db.Append(context.Background(), usage(fmt.Sprintf("+1555000%04d", i))); err != nil {
				done <- err
				return
			}
		}
	}()
	for range 5 {
		if rep := db.Scan(subject); len(rep.Fields) == 0 {
			t.Errorf("scan beside appends found %d fields of a held subject", len(rep.Fields))
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
