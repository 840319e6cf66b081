package store_test

import (
	"fmt"
	"testing"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

// seqs lists the sequences of the pending records of a type.
func seqs(t *testing.T, db *storetest.DB, typ store.Type) []uint64 {
	t.Helper()
	var out []uint64
	for _, r := range pending(t, db, typ) {
		out = append(out, r.Seq)
	}
	return out
}

func TestAckRanges(t *testing.T) {
	cases := []struct {
		name    string
		ranges  []store.Range
		removed int
		left    int // usage records left of 20
		err     bool
	}{
		{name: "one range", ranges: []store.Range{{Type: store.TypeUsage, First: 1, Last: 5}}, removed: 5, left: 15},
		{name: "two ranges, one transaction", ranges: []store.Range{{Type: store.TypeUsage, First: 1, Last: 5}, {Type: store.TypeUsage, First: 6, Last: 12}}, removed: 12, left: 8},
		{name: "a range past the end", ranges: []store.Range{{Type: store.TypeUsage, First: 18, Last: 1000}}, removed: 3, left: 17},
		{name: "a single record", ranges: []store.Range{{Type: store.TypeUsage, First: 7, Last: 7}}, removed: 1, left: 19},
		{name: "another type's range", ranges: []store.Range{{Type: store.TypeConsent, First: 1, Last: 20}}, removed: 2, left: 20},
		{name: "empty range", ranges: []store.Range{{Type: store.TypeUsage, First: 5, Last: 4}}, left: 20, err: true},
		{name: "unknown type", ranges: []store.Range{{Type: 9, First: 1, Last: 4}}, left: 20, err: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Merged every 8 records, so ranges cover merged records and
			// the tail.
			db := storetest.Open(t, func(o *store.Options) { store.WithMergeEvery(o, 8) })
			for i := range 20 {
				mustAppend(t, db, usage(fmt.Sprintf("+1555000%04d", i%4)))
			}
			mustAppend(t, db, consent("+15550000001"), consent("+15550000002"))
			n, err := db.AckRanges(tc.ranges...)
			if (err != nil) != tc.err {
				t.Fatalf("ack = %d, %v; want error %v", n, err, tc.err)
			}
			if n != tc.removed {
				t.Errorf("removed %d, want %d", n, tc.removed)
			}
			if got := len(seqs(t, db, store.TypeUsage)); got != tc.left {
				t.Errorf("%d usage records left, want %d", got, tc.left)
			}
			st, _ := db.Stats()
			if st.Outbox["usage"].Pending != tc.left {
				t.Errorf("stats: %d usage pending, want %d", st.Outbox["usage"].Pending, tc.left)
			}
			// Delivery is at least once: the same ranges again remove
			// nothing.
			if n, err := db.AckRanges(tc.ranges...); n != 0 || (err != nil) != tc.err {
				t.Errorf("second ack = %d, %v; want 0", n, err)
			}
			// Every subject's records are still found, none of those gone.
			for i := range 4 {
				subject := fmt.Sprintf("+1555000%04d", i)
				exp, err := db.Export(subject)
				if err != nil {
					t.Fatalf("export %s: %v", subject, err)
				}
				for _, r := range exp {
					if r.Type == store.TypeUsage && !containsSeq(seqs(t, db, store.TypeUsage), r.Seq) {
						t.Errorf("export of %s returned acknowledged record seq %d", subject, r.Seq)
					}
				}
			}
		})
	}
}

func containsSeq(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// While a backlog drains, the index entries and keys of delivered
// subjects wait in the ack log; an export (or erase, or merge) sweeps them
// first, and the last acknowledgement, which empties the outbox, drops them
// all.
func TestAckRangesSweep(t *testing.T) {
	db := storetest.Open(t, func(o *store.Options) { store.WithMergeEvery(o, 8) })
	const a, b = "+15550001111", "+15550002222"
	for range 8 {
		mustAppend(t, db, usage(a))
	}
	for range 16 {
		mustAppend(t, db, usage(b))
	}
	if !store.KeyHeldForTest(db.Store, a) || store.IndexEntriesForTest(db.Store, a) != 8 {
		t.Fatalf("before: key of a held %v, %d entries; want held, 8", store.KeyHeldForTest(db.Store, a), store.IndexEntriesForTest(db.Store, a))
	}
	if n, err := db.AckRanges(store.Range{Type: store.TypeUsage, First: 1, Last: 8}); err != nil || n != 8 {
		t.Fatalf("ack = %d, %v", n, err)
	}
	// Deferred: the entries dangle, the key is still there.
	if got := store.AckLogForTest(db.Store); got != 8 {
		t.Errorf("ack log holds %d records, want 8", got)
	}
	if !store.KeyHeldForTest(db.Store, a) {
		t.Errorf("key of a destroyed before the sweep; the test shows nothing")
	}
	exp, err := db.Export(a)
	if err != nil || len(exp) != 0 {
		t.Fatalf("export of a delivered subject = %d records, %v; want 0, nil", len(exp), err)
	}
	if store.KeyHeldForTest(db.Store, a) || store.IndexEntriesForTest(db.Store, a) != 0 || store.AckLogForTest(db.Store) != 0 {
		t.Errorf("after the sweep: key of a held %v, %d entries, log %d; want none", store.KeyHeldForTest(db.Store, a), store.IndexEntriesForTest(db.Store, a), store.AckLogForTest(db.Store))
	}
	if exp, err := db.Export(b); err != nil || len(exp) != 16 {
		t.Errorf("export of b = %d, %v; want 16", len(exp), err)
	}
	if n, err := db.AckRanges(store.Range{Type: store.TypeUsage, First: 9, Last: 24}); err != nil || n != 16 {
		t.Fatalf("ack = %d, %v", n, err)
	}
	if store.KeyHeldForTest(db.Store, b) || store.IndexEntriesForTest(db.Store, b) != 0 || store.AckLogForTest(db.Store) != 0 {
		t.Errorf("outbox empty: key of b held %v, %d entries, log %d; want none", store.KeyHeldForTest(db.Store, b), store.IndexEntriesForTest(db.Store, b), store.AckLogForTest(db.Store))
	}
	// The store goes on: new records of b get a key and are found.
	mustAppend(t, db, usage(b))
	if exp, err := db.Export(b); err != nil || len(exp) != 1 {
		t.Errorf("export of b after a new record = %d, %v; want 1", len(exp), err)
	}
}

// An erase reaches the subject's records in ranges not yet acknowledged,
// merged or not, and leaves nothing of the subject the device key reads:
// not in the records, the index, the key table or the ack log.
func TestEraseWithRangesAcknowledged(t *testing.T) {
	db := storetest.Open(t, func(o *store.Options) { store.WithMergeEvery(o, 16) })
	const subject = "+15550003333"
	for i := range 40 {
		remote := fmt.Sprintf("+1555000%04d", 4000+i)
		if i%4 == 0 {
			remote = subject // seqs 1, 5, 9, ..., 37
		}
		mustAppend(t, db, usage(remote))
	}
	mustAppend(t, db, consent(subject))
	// 1-20 delivered (merged, deferred in the ack log); 21-40 pending.
	if n, err := db.AckRanges(store.Range{Type: store.TypeUsage, First: 1, Last: 20}); err != nil || n != 20 {
		t.Fatalf("ack = %d, %v", n, err)
	}
	if store.AckLogForTest(db.Store) == 0 {
		t.Fatal("nothing waits in the ack log; the test would show nothing")
	}
	res, err := db.EraseSubject(subject) // storetest: scans before and after
	if err != nil {
		t.Fatal(err)
	}
	if res.UsageRedacted != 5 || res.ConsentDeleted != 1 || !res.KeyDestroyed {
		t.Errorf("erase = %+v; want 5 usage redacted (seqs 21-40), 1 consent deleted, key destroyed", res)
	}
	for _, r := range pending(t, db, store.TypeUsage) {
		if len(r.Personal) == 0 && (r.Seq-1)%4 != 0 {
			t.Errorf("record seq %d of another subject lost its fields", r.Seq)
		}
		if (r.Seq-1)%4 == 0 && len(r.Personal) != 0 {
			t.Errorf("record seq %d of the subject still has fields", r.Seq)
		}
	}
}
