package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

// snapshot maps record id -> platform JSON for every pending record.
func snapshot(t *testing.T, db *storetest.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, typ := range store.Types {
		for _, r := range pending(t, db, typ) {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("marshal %s: %v", r.ID, err)
			}
			out[r.ID] = string(b)
		}
	}
	return out
}

func TestEraseSubjectLeavesNoTrace(t *testing.T) {
	db := storetest.Open(t)
	const subject = "+15551234567"
	// The subject arrives in the forms real systems write it.
	var subjIDs []string
	for _, form := range []string{"+15551234567", "(555) 123-4567", "sip:+15551234567@pbx.example;user=phone", "tel:+1-555-123-4567", "0015551234567"} {
		subjIDs = append(subjIDs, mustAppend(t, db, usage(form))...)
	}
	subjIDs = append(subjIDs, mustAppend(t, db,
		consent("5551234567"),
		violation(subject, "+15550000002"),
		&store.Receipt{CommandID: "export-1", Status: "done", Subject: subject, Result: json.RawMessage(`{"records":[{"remote":"+15551234567"}]}`)},
	)...)
	// Other people, before and after, must come through untouched.
	var others []string
	for i := range 20 {
		n := fmt.Sprintf("+1555000%04d", 100+i)
		others = append(others, mustAppend(t, db, usage(n), consent(n))...)
	}
	before := snapshot(t, db)
	// Sealed, the number is never on disk in clear: only a scan with the
	// device key can show it gone, and it must first show it there.
	found := db.AssertFound(subject)
	if len(found.Fields) < len(subjIDs)+1 { // the consent has two fields
		t.Errorf("the scan opened %d fields of the subject, want at least %d", len(found.Fields), len(subjIDs)+1)
	}

	exp, err := db.Export("+1 555 123 4567")
	if err != nil {
		t.Fatal(err)
	}
	if len(exp) != len(subjIDs) {
		t.Errorf("export found %d records, want %d", len(exp), len(subjIDs))
	}
	for _, r := range exp {
		if r.Type == store.TypeViolation {
			v, _ := r.Decode()
			if nums := v.(*store.Violation).Numbers; len(nums) != 1 || nums[0] != subject {
				t.Errorf("export of a shared violation disclosed %d numbers, want only the subject's", len(nums))
			}
		}
	}

	res, err := db.EraseSubject("+1 555 123 4567")
	if err != nil {
		t.Fatal(err)
	}
	want := store.EraseResult{UsageRedacted: 5, ConsentDeleted: 1, ViolationRedacted: 1, ReceiptRedacted: 1, KeyDestroyed: true}
	if res != want {
		t.Errorf("erase = %+v, want %+v", res, want)
	}
	if recs, err := db.Export(subject); err != nil || len(recs) != 0 {
		t.Errorf("export after erase = %d records, %v", len(recs), err)
	}
	db.AssertErased(subject)
	after := snapshot(t, db)
	for _, id := range others {
		if after[id] != before[id] {
			t.Errorf("record %s of another subject changed:\n before %s\n after  %s", id, before[id], after[id])
		}
	}
	// Billing stays right: the usage records remain, minus the remote party.
	for _, r := range pending(t, db, store.TypeUsage) {
		p, _ := r.Decode()
		u := p.(*store.Usage)
		if before[r.ID] != "" && u.Remote == "" && (u.DurationS != 60 || u.Line != "+15551230001" || u.AnsweredAt.IsZero()) {
			t.Errorf("redacted usage %s lost non-personal fields: %+v", r.ID, u)
		}
	}
	if got := len(pending(t, db, store.TypeUsage)); got != 5+20 {
		t.Errorf("usage records after erase = %d, want 25", got)
	}
	for _, r := range pending(t, db, store.TypeViolation) {
		p, _ := r.Decode()
		if v := p.(*store.Violation); len(v.Numbers) != 1 || v.Numbers[0] != "+15550000002" {
			t.Errorf("violation numbers after erase = %v, want only the other party", v.Numbers)
		}
	}
	if _, err := os.Stat(filepath.Join(db.Dir, store.FileName+".compact")); !os.IsNotExist(err) {
		t.Errorf("compaction left its temporary file: %v", err)
	}
	again, err := db.EraseSubject(subject)
	if err != nil || again != (store.EraseResult{}) {
		t.Errorf("second erase = %+v, %v; want a no-op", again, err)
	}
	// Cleanup scans again, once the store is closed.
}

func TestEraseAll(t *testing.T) {
	db := storetest.Open(t)
	subjects := []string{"+15551234567", "+15557654321", "+442079460000"}
	for _, s := range subjects {
		mustAppend(t, db, usage(s), consent(s), violation(s))
	}
	for _, s := range subjects {
		db.AssertFound(s)
	}
	res, err := db.EraseAll()
	if err != nil {
		t.Fatal(err)
	}
	want := store.EraseAllResult{Usage: 3, Consent: 3, Violation: 3, Keys: 3}
	if res != want {
		t.Errorf("erase all = %+v, want %+v", res, want)
	}
	for _, typ := range store.Types {
		if n := len(pending(t, db, typ)); n != 0 {
			t.Errorf("%s: %d records after erase all", typ, n)
		}
	}
	st, _ := db.Stats()
	for typ, ts := range st.Outbox {
		if ts.Pending != 0 {
			t.Errorf("stats %s pending = %d after erase all", typ, ts.Pending)
		}
	}
	// The store keeps working afterwards.
	mustAppend(t, db, usage("+15550001111"))
	db.Close()
	for _, s := range subjects {
		storetest.AssertErased(t, db.Dir, s)
	}
}

// The subject index catches up in batches; an erase or export must find the
// subject's records on both sides of the last merge, and an ack must remove
// merged records from the index.
func TestIndexAcrossMerges(t *testing.T) {
	db := storetest.Open(t)
	const subject = "+15551234567"
	var first []string
	batch := make([]store.Payload, 0, 500)
	for i := range 9000 { // more than one merge's worth
		remote := fmt.Sprintf("+1555%07d", i)
		if i%1000 == 0 {
			remote = subject
		}
		batch = append(batch, usage(remote))
		if len(batch) == cap(batch) {
			ids := mustAppend(t, db, batch...)
			if first == nil {
				first = ids
			}
			batch = batch[:0]
		}
	}
	tail := mustAppend(t, db, usage(subject), consent(subject)) // after the merge
	exp, err := db.Export(subject)
	if err != nil || len(exp) != 9+2 {
		t.Fatalf("export = %d records, %v; want 11 (9 merged, 2 in the tail)", len(exp), err)
	}
	// first[0] is a merged record of the subject.
	if n, err := db.Ack(first[0]); err != nil || n != 1 {
		t.Fatalf("ack = %d, %v", n, err)
	}
	if exp, _ := db.Export(subject); len(exp) != 10 {
		t.Errorf("export after ack = %d records, want 10", len(exp))
	}
	db.AssertFound(subject)
	res, err := db.EraseSubject(subject)
	if err != nil {
		t.Fatal(err)
	}
	if res.UsageRedacted != 9 || res.ConsentDeleted != 1 || !res.KeyDestroyed {
		t.Errorf("erase = %+v, want 9 usage redacted, 1 consent deleted, key destroyed", res)
	}
	for _, id := range tail[:1] {
		for _, r := range pending(t, db, store.TypeUsage) {
			if r.ID == id && len(r.Personal) != 0 {
				t.Errorf("tail record %s still has personal fields after erase", id)
			}
		}
	}
	db.AssertErased(subject)
}

// An id is checked against the record it points to: one that names the
// right place but is not that record's id removes nothing.
func TestAckChecksID(t *testing.T) {
	db := storetest.Open(t)
	ids := mustAppend(t, db, usage("+15551234567"))
	forged := []byte(ids[0])
	last := forged[len(forged)-1]
	if last == 'Z' {
		forged[len(forged)-1] = 'Y'
	} else {
		forged[len(forged)-1] = 'Z'
	}
	if n, err := db.Ack(string(forged)); err != nil || n != 0 {
		t.Errorf("ack of a forged id = %d, %v; want 0, nil", n, err)
	}
	if got := len(pending(t, db, store.TypeUsage)); got != 1 {
		t.Errorf("pending after forged ack = %d, want 1", got)
	}
}

// Appenders seal with keys they make themselves for subjects the store has
// never seen, so several appenders of one new subject race to make its key.
// Whichever keys win, every record opens, each subject's records are all
// found, and an erase leaves nothing of the subject the device key reads.
func TestConcurrentAppendersOfNewSubjects(t *testing.T) {
	db := storetest.Open(t)
	subjects := make([]string, 12)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("+1555777%04d", i)
	}
	const appenders, each = 16, 150
	want := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	for g := range appenders {
		for i := range each {
			want[subjects[(g+i)%len(subjects)]]++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := db.Append(context.Background(), usage(subjects[(g+i)%len(subjects)])); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
	for _, r := range pending(t, db, store.TypeUsage) {
		p, err := r.Decode()
		if err != nil {
			t.Fatalf("record %s: %v", r.ID, err)
		}
		if u := p.(*store.Usage); want[u.Remote] == 0 {
			t.Fatalf("record %s opened to remote %q, not one of the subjects", r.ID, u.Remote)
		}
	}
	for _, s := range subjects[:3] {
		exp, err := db.Export(s)
		if err != nil || len(exp) != want[s] {
			t.Fatalf("export %s = %d records, %v; want %d", s, len(exp), err, want[s])
		}
	}
	db.AssertFound(subjects[0])
	res, err := db.EraseSubject(subjects[0])
	if err != nil || res.UsageRedacted != want[subjects[0]] || !res.KeyDestroyed {
		t.Fatalf("erase = %+v, %v; want %d usage records redacted and the key destroyed", res, err, want[subjects[0]])
	}
	db.AssertErased(subjects[0])
	if exp, err := db.Export(subjects[1]); err != nil || len(exp) != want[subjects[1]] {
		t.Errorf("export of another subject after the erase = %d records, %v; want %d", len(exp), err, want[subjects[1]])
	}
}

// With a merge every 64 records the subject index and key table are built
// of many runs merged into fewer: lookups across them still find every
// record of a subject, acknowledgements remove entries from whichever run
// holds them, and an erase leaves nothing the device key reads.
func TestIndexAcrossManyMerges(t *testing.T) {
	db := storetest.Open(t, func(o *store.Options) { store.WithMergeEvery(o, 64) })
	const subjects = 150
	want := map[string]int{}
	var acked []string
	for i := range 3000 {
		remote := fmt.Sprintf("+1555888%04d", i%subjects)
		ids := mustAppend(t, db, usage(remote))
		want[remote]++
		if i%5 == 0 && i > 500 {
			acked = append(acked, ids[0])
			want[remote]--
		}
	}
	if n, err := db.Ack(acked...); err != nil || n != len(acked) {
		t.Fatalf("ack = %d, %v; want %d", n, err, len(acked))
	}
	for i := range subjects {
		remote := fmt.Sprintf("+1555888%04d", i)
		if exp, err := db.Export(remote); err != nil || len(exp) != want[remote] {
			t.Fatalf("export %s = %d records, %v; want %d", remote, len(exp), err, want[remote])
		}
	}
	subject := "+15558880007"
	db.AssertFound(subject)
	res, err := db.EraseSubject(subject)
	if err != nil || res.UsageRedacted != want[subject] || !res.KeyDestroyed {
		t.Fatalf("erase = %+v, %v; want %d redacted and the key destroyed", res, err, want[subject])
	}
	db.AssertErased(subject)
	db.Close()
	index, keys := store.RunSizesForTest(t, filepath.Join(db.Dir, store.FileName))
	if len(index) > 8 || len(keys) > 8 {
		t.Errorf("runs: index %v, keys %v; want at most 8 of each for 3,000 records merged 64 at a time", index, keys)
	}
	db = storetest.OpenDir(t, db.Dir)
	if exp, err := db.Export("+15558880008"); err != nil || len(exp) != want["+15558880008"] {
		t.Errorf("export after reopen = %d, %v; want %d", len(exp), err, want["+15558880008"])
	}
}

// A file of schema 1 (the subject index and keys in one bucket each) opens:
// its buckets are read as the oldest runs, exports and erases find what
// they hold, and the file is marked schema 2 so an older agent refuses it.
func TestSchema1File(t *testing.T) {
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir)
	const subject, other = "+15551234567", "+15557654321"
	for range 3 {
		mustAppend(t, db, usage(subject), usage(other), consent(subject))
	}
	if _, err := db.Export(subject); err != nil { // merges the index
		t.Fatal(err)
	}
	db.Close()
	path := filepath.Join(dir, store.FileName)
	store.ToSchema1ForTest(t, path)
	if index, _ := store.RunSizesForTest(t, path); len(index) != 1 {
		t.Fatalf("schema 1 file has %d index runs, want the one legacy bucket", len(index))
	}
	db = storetest.OpenDir(t, dir)
	mustAppend(t, db, usage(subject))
	if exp, err := db.Export(subject); err != nil || len(exp) != 7 {
		t.Fatalf("export = %d records, %v; want 7 (6 in the schema 1 index, 1 new)", len(exp), err)
	}
	if rep := db.AssertFound(subject); !slices.ContainsFunc(rep.Keys, func(tr store.Trace) bool { return tr.In == "key table" }) {
		t.Errorf("no key of the subject found in the schema 1 key table")
	}
	res, err := db.EraseSubject(subject)
	if err != nil || res.UsageRedacted != 4 || res.ConsentDeleted != 3 || !res.KeyDestroyed {
		t.Fatalf("erase = %+v, %v", res, err)
	}
	db.AssertErased(subject)
	if exp, err := db.Export(other); err != nil || len(exp) != 3 {
		t.Errorf("export of the other subject = %d, %v; want 3", len(exp), err)
	}
	db.Close()
	if v := store.SchemaForTest(t, path); v != store.SchemaVersion {
		t.Errorf("schema after opening a schema 1 file = %d, want %d", v, store.SchemaVersion)
	}
}

// The platform usually erases a subject after the device delivered its
// records: the acknowledgements deleted them and their key, yet the pages
// they lay on are free, not zeroed, and keep the sealed fields beside the
// wrapped key. The erase must still leave nothing the device key reads.
func TestEraseAfterAcknowledgement(t *testing.T) {
	db := storetest.Open(t)
	const subject = "+15551234567"
	ids := storetest.FillUsage(t, db.Store, 3000, func(i int) string {
		if i%10 == 0 {
			return subject
		}
		return fmt.Sprintf("+1555000%04d", i)
	})
	if n, err := db.Ack(ids...); err != nil || n != len(ids) {
		t.Fatalf("ack = %d, %v", n, err)
	}
	if rep := db.AssertFound(subject); slices.ContainsFunc(rep.Fields, func(tr store.Trace) bool { return !tr.Free }) {
		t.Errorf("a field of an acknowledged record is on a page in use")
	}
	res, err := db.EraseSubject(subject)
	if err != nil {
		t.Fatal(err)
	}
	if res != (store.EraseResult{}) {
		t.Errorf("erase = %+v, want nothing left to redact", res)
	}
	db.AssertErased(subject)
}
