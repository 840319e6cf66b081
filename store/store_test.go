package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
	"github.com/leadport/leadport-agent/store/storetest"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func usage(remote string) *store.Usage {
	return &store.Usage{
		Line: "+15551230001", Direction: "outbound", Remote: remote,
		StartedAt: t0, AnsweredAt: t0.Add(3 * time.Second), EndedAt: t0.Add(63 * time.Second),
		DurationS: 60, Disposition: "answered", FinalStatus: 200,
	}
}

func consent(subject string) *store.Consent {
	return &store.Consent{
		Subject: subject, Purpose: "sales-calls", State: "granted", Method: "verbal",
		CapturedAt: t0, Evidence: "recording://calls/2026/11/27/abc.wav", Line: "+15551230001",
	}
}

func violation(numbers ...string) *store.Violation {
	return &store.Violation{
		Rule: "pacing", Line: "+15551230001", Action: "blocked", At: t0, CallID: "a84b4c76e66710",
		Evidence: json.RawMessage(`{"attempts_per_minute":9,"max_attempts_per_minute":6}`), Numbers: numbers,
	}
}

func mustAppend(t *testing.T, db *storetest.DB, ps ...store.Payload) []string {
	t.Helper()
	ids, err := db.Append(context.Background(), ps...)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return ids
}

func pending(t *testing.T, db *storetest.DB, typ store.Type) []store.Record {
	t.Helper()
	recs, err := db.Pending(typ, store.ReadOptions{})
	if err != nil {
		t.Fatalf("pending %s: %v", typ, err)
	}
	return recs
}

func recordJSON(t *testing.T, r store.Record) map[string]any {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("marshal %s: %v", r.ID, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return m
}

func TestRoundTripEachType(t *testing.T) {
	tests := []struct {
		name string
		in   store.Payload
		want map[string]any // fields of the platform JSON to check
	}{
		{"usage", usage("+15551234567"), map[string]any{
			"type": "usage", "remote": "+15551234567", "line": "+15551230001", "direction": "outbound",
			"disposition": "answered", "duration_s": 60.0, "final_status": 200.0,
			"started_at": "2026-11-27T10:00:00Z", "ended_at": "2026-11-27T10:01:03Z",
		}},
		{"usage blocked", &store.Usage{Line: "+15551230001", Direction: "outbound", Remote: "+15557654321",
			StartedAt: t0, EndedAt: t0, Disposition: "blocked", FinalStatus: 403, BlockedBy: "pacing"}, map[string]any{
			"disposition": "blocked", "blocked_by": "pacing", "remote": "+15557654321",
		}},
		{"consent", consent("+15551234567"), map[string]any{
			"type": "consent", "subject": "+15551234567", "purpose": "sales-calls", "state": "granted",
			"method": "verbal", "evidence": "recording://calls/2026/11/27/abc.wav", "captured_at": "2026-11-27T10:00:00Z",
		}},
		{"violation", violation("+15551234567", "+15551234568"), map[string]any{
			"type": "violation", "rule": "pacing", "action": "blocked", "numbers": []any{"+15551234567", "+15551234568"},
			"evidence": map[string]any{"attempts_per_minute": 9.0, "max_attempts_per_minute": 6.0},
		}},
		{"receipt", &store.Receipt{CommandID: "cmd-1", Status: "done", At: t0, Result: json.RawMessage(`{"usage_redacted":1}`)}, map[string]any{
			"type": "receipt", "command_id": "cmd-1", "status": "done", "reason": "", "result": map[string]any{"usage_redacted": 1.0},
		}},
		{"receipt with personal result", &store.Receipt{CommandID: "cmd-2", Status: "done", At: t0, Subject: "+15551234567",
			Result: json.RawMessage(`{"records":[{"remote":"+15551234567"}]}`)}, map[string]any{
			"result": map[string]any{"records": []any{map[string]any{"remote": "+15551234567"}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := storetest.Open(t)
			ids := mustAppend(t, db, tt.in)
			recs := pending(t, db, tt.in.RecordType())
			if len(recs) != 1 || recs[0].ID != ids[0] {
				t.Fatalf("pending = %d records, want the one appended (%s)", len(recs), ids[0])
			}
			got := recordJSON(t, recs[0])
			if got["id"] != ids[0] {
				t.Errorf("id = %v, want %s", got["id"], ids[0])
			}
			for k, want := range tt.want {
				if g, _ := json.Marshal(got[k]); string(g) != mustJSON(t, want) {
					t.Errorf("%s = %s, want %s", k, g, mustJSON(t, want))
				}
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAppendRejectsInvalidRecords(t *testing.T) {
	long := strings.Repeat("x", store.MaxEvidence+1)
	tests := []struct {
		name string
		in   store.Payload
		want string
	}{
		{"usage without line", &store.Usage{Direction: "inbound", Disposition: "answered"}, "line is empty"},
		{"usage bad direction", &store.Usage{Line: "+15551230001", Direction: "sideways", Disposition: "answered"}, "direction"},
		{"usage bad disposition", &store.Usage{Line: "+15551230001", Direction: "inbound", Disposition: "maybe"}, "disposition"},
		{"consent without subject", &store.Consent{Purpose: "p", State: "granted", Method: "web", CapturedAt: t0}, "subject is empty"},
		{"consent bad state", &store.Consent{Subject: "+15551234567", Purpose: "p", State: "perhaps", Method: "web", CapturedAt: t0}, "state"},
		{"consent bad method", &store.Consent{Subject: "+15551234567", Purpose: "p", State: "granted", Method: "telepathy", CapturedAt: t0}, "method"},
		{"consent evidence too long", &store.Consent{Subject: "+15551234567", Purpose: "p", State: "granted", Method: "web", CapturedAt: t0, Evidence: long}, "evidence"},
		{"consent without time", &store.Consent{Subject: "+15551234567", Purpose: "p", State: "granted", Method: "web"}, "captured_at"},
		{"consent recorded_by too long", &store.Consent{Subject: "+15551234567", Purpose: "p", State: "granted", Method: "web", CapturedAt: t0, RecordedBy: long}, "recorded_by"},
		{"violation bad action", &store.Violation{Rule: "pacing", Action: "scolded"}, "action"},
		{"violation bad evidence", &store.Violation{Rule: "pacing", Action: "observed", Evidence: json.RawMessage(`{`)}, "evidence"},
		{"receipt bad status", &store.Receipt{CommandID: "c", Status: "meh"}, "status"},
	}
	db := storetest.Open(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := db.Append(context.Background(), usage("+15551234567"), tt.in)
			if !errors.Is(err, store.ErrInvalidRecord) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrInvalidRecord mentioning %q", err, tt.want)
			}
		})
	}
	// A batch with one bad record stores none of it.
	for _, typ := range store.Types {
		if n := len(pending(t, db, typ)); n != 0 {
			t.Errorf("%s outbox holds %d records after rejected appends", typ, n)
		}
	}
}

func TestPendingOrderLimitsAndAck(t *testing.T) {
	db := storetest.Open(t)
	var ids []string
	for i := range 50 {
		ids = append(ids, mustAppend(t, db, usage(fmt.Sprintf("+1555200%04d", i)))...)
	}
	all := pending(t, db, store.TypeUsage)
	if len(all) != 50 {
		t.Fatalf("pending = %d, want 50", len(all))
	}
	for i, r := range all {
		if r.ID != ids[i] {
			t.Fatalf("record %d = %s, want %s: order not kept", i, r.ID, ids[i])
		}
	}
	page, err := db.Pending(store.TypeUsage, store.ReadOptions{After: all[9].Seq, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 5 || page[0].ID != ids[10] {
		t.Errorf("page after seq %d = %d records from %v, want 5 from %s", all[9].Seq, len(page), page[0].ID, ids[10])
	}
	small, err := db.Pending(store.TypeUsage, store.ReadOptions{MaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(small) != 1 {
		t.Errorf("MaxBytes 1 gave %d records, want exactly 1 (always progress)", len(small))
	}

	n, err := db.Ack(ids[:20]...)
	if err != nil || n != 20 {
		t.Fatalf("ack = %d, %v; want 20", n, err)
	}
	n, err = db.Ack(ids[:20]...)
	if err != nil || n != 0 {
		t.Errorf("second ack of the same ids = %d, %v; want 0, nil", n, err)
	}
	if _, err := db.Ack("not-a-ulid"); err == nil {
		t.Errorf("ack of a malformed id succeeded")
	}
	rest := pending(t, db, store.TypeUsage)
	if len(rest) != 30 || rest[0].ID != ids[20] {
		t.Errorf("after ack: %d pending from %s, want 30 from %s", len(rest), rest[0].ID, ids[20])
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Outbox["usage"]; got.Pending != 30 || got.OldestCreated.IsZero() {
		t.Errorf("stats usage = %+v, want 30 pending with an oldest time", got)
	}
	if got := st.Outbox["consent"]; got.Pending != 0 || !got.OldestCreated.IsZero() {
		t.Errorf("stats consent = %+v, want empty", got)
	}
	if _, err := db.Export("+15552000000"); err != nil {
		t.Fatal(err)
	}
	// An acknowledged subject's key is destroyed: nothing of it is kept.
	if recs, _ := db.Export("+15552000000"); len(recs) != 0 {
		t.Errorf("export after ack found %d records", len(recs))
	}
}

func TestCountsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := db.Append(context.Background(), usage("+15551234567"), consent("+15551234567")); err != nil {
			t.Fatal(err)
		}
	}
	id, err := db.DeviceID(func() string { return "pbx-test" })
	if err != nil || id != "pbx-test" {
		t.Fatalf("device id = %q, %v", id, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	re := storetest.OpenDir(t, dir)
	st, err := re.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Outbox["usage"].Pending != 3 || st.Outbox["consent"].Pending != 3 {
		t.Errorf("after reopen: %+v, want 3 usage and 3 consent", st.Outbox)
	}
	if id, _ := re.DeviceID(func() string { return "other" }); id != "pbx-test" {
		t.Errorf("device id after reopen = %q, want pbx-test", id)
	}
}

// The number must never reach the disk in clear, erased or not.
func TestPersonalFieldsEncryptedAtRest(t *testing.T) {
	db := storetest.Open(t)
	subj := "+15559876543"
	mustAppend(t, db, usage(subj), consent(subj), violation(subj),
		&store.Receipt{CommandID: "x", Status: "done", Subject: subj, Result: json.RawMessage(`{"remote":"+15559876543"}`)})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// digest nil: the digest is expected in the file while the subject is held.
	storetest.AssertNoTrace(t, db.Dir, subj, nil)
	data, err := os.ReadFile(filepath.Join(db.Dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("recording://calls")) {
		t.Errorf("consent evidence stored in clear")
	}
	if !bytes.Contains(data, []byte("sales-calls")) {
		t.Errorf("non-personal field not found in the file: the scan itself is broken")
	}
}

func TestDeviceKey(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Append(context.Background(), usage("+15551234567")); err != nil {
		t.Fatal(err)
	}
	db.Close()
	keyFile := filepath.Join(dir, store.KeyFileName)
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("device key mode = %v, want 0600", fi.Mode().Perm())
	}

	t.Run("CheckKeyFile", func(t *testing.T) {
		if err := store.CheckKeyFile(fi); err != nil {
			t.Errorf("the store's own key: %v", err)
		}
		short := filepath.Join(t.TempDir(), "short.key")
		if err := os.WriteFile(short, []byte("short"), 0o600); err != nil {
			t.Fatal(err)
		}
		sfi, err := os.Stat(short)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.CheckKeyFile(sfi); !errors.Is(err, store.ErrNotDeviceKey) || err.Error() != "5 bytes, want 32: not a device key" {
			t.Errorf("a 5-byte file: %v, want ErrNotDeviceKey", err)
		}
	})
	t.Run("wrong key refused", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.key")
		if err := os.WriteFile(other, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := store.Open(store.Options{Dir: dir, KeyFile: other})
		if !errors.Is(err, store.ErrWrongKey) {
			t.Errorf("open with another key: %v, want ErrWrongKey", err)
		}
	})
	t.Run("missing key refused when data depends on it", func(t *testing.T) {
		_, err := store.Open(store.Options{Dir: dir, KeyFile: filepath.Join(t.TempDir(), "absent.key")})
		if err == nil || !strings.Contains(err.Error(), "missing") {
			t.Errorf("open without the key: %v, want an error saying it is missing", err)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	t.Run("newer schema", func(t *testing.T) {
		dir := t.TempDir()
		db, err := store.Open(store.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		store.SetSchemaForTest(t, filepath.Join(dir, store.FileName), store.SchemaVersion+1)
		_, err = store.Open(store.Options{Dir: dir})
		if !errors.Is(err, store.ErrNewerSchema) {
			t.Errorf("err = %v, want ErrNewerSchema", err)
		}
	})
	corrupt := []struct {
		name string
		data func(valid []byte) []byte
	}{
		{"garbage", func([]byte) []byte { return bytes.Repeat([]byte("leadport"), 4096) }},
		{"truncated", func(v []byte) []byte { return v[:100] }},
		{"zeroed meta pages", func(v []byte) []byte {
			v = bytes.Clone(v)
			clear(v[:8192])
			return v
		}},
	}
	for _, tt := range corrupt {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := store.Open(store.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			db.Close()
			path := filepath.Join(dir, store.FileName)
			valid, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.data(valid), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = store.Open(store.Options{Dir: dir})
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("open of a %s file: %v, want an error naming %s", tt.name, err, path)
			}
		})
	}
	t.Run("in use", func(t *testing.T) {
		db := storetest.Open(t)
		_, err := store.Open(store.Options{Dir: db.Dir})
		if !errors.Is(err, store.ErrLocked) {
			t.Errorf("second open: %v, want ErrLocked", err)
		}
	})
}

func TestSizeCap(t *testing.T) {
	db := storetest.Open(t, func(o *store.Options) { o.MaxSize = 1 << 20 })
	var stored []string
	var err error
	for i := 0; i < 1000; i++ {
		batch := make([]store.Payload, 50)
		for j := range batch {
			batch[j] = usage(fmt.Sprintf("+1555300%04d", (i*50+j)%10000))
		}
		var ids []string
		ids, err = db.Append(context.Background(), batch...)
		if err != nil {
			break
		}
		stored = append(stored, ids...)
	}
	if !errors.Is(err, store.ErrFull) {
		t.Fatalf("appends never hit the cap; last err = %v", err)
	}
	st, _ := db.Stats()
	if !st.Full {
		t.Errorf("stats do not say the store is full")
	}
	recs := pending(t, db, store.TypeUsage)
	if len(recs) != len(stored) {
		t.Fatalf("pending = %d, want every stored record (%d)", len(recs), len(stored))
	}
	// Delivering records makes room again.
	if _, err := db.Ack(stored[:len(stored)/2]...); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Append(context.Background(), usage("+15551234567")); err != nil {
		t.Errorf("append after ack freed space: %v", err)
	}
	if st, _ := db.Stats(); st.Full {
		t.Errorf("stats still say full after space was freed")
	}
}

func TestLedgerAndPolicy(t *testing.T) {
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir)
	exp := time.Now().Add(time.Hour)
	if seen, err := db.RememberCommand("cmd-1", exp); err != nil || seen {
		t.Fatalf("first remember = %v, %v", seen, err)
	}
	if seen, _ := db.RememberCommand("cmd-1", exp); !seen {
		t.Errorf("second remember did not report a replay")
	}
	if _, err := db.RememberCommand("cmd-old", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := db.PruneCommands(time.Now()); err != nil || n != 1 {
		t.Errorf("prune = %d, %v; want 1", n, err)
	}
	if err := db.SavePolicy(7, []byte(`{"version":7}`)); err != nil {
		t.Fatal(err)
	}
	if doc, err := db.PolicyUsage(); err != nil || doc != nil {
		t.Errorf("policy usage before any was saved = %q, %v; want nil", doc, err)
	}
	if err := db.SavePolicyUsage([]byte(`[{"line":"+15551230001","month":"2026-11","seconds":60}]`)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.EraseAll(); err != nil {
		t.Fatal(err)
	}
	if seen, _ := db.RememberCommand("cmd-1", exp); !seen {
		t.Errorf("erase all forgot the command ledger: old commands could be replayed")
	}
	if v, doc, err := db.Policy(); err != nil || v != 7 || string(doc) != `{"version":7}` {
		t.Errorf("policy = %d %s %v, want version 7 kept", v, doc, err)
	}
	// Minutes used are billing state, not personal data: erase keeps them.
	if doc, err := db.PolicyUsage(); err != nil || !strings.Contains(string(doc), `"seconds":60`) {
		t.Errorf("policy usage after erase all = %q, %v; want it kept", doc, err)
	}
}

func ExampleStore_Append() {
	dir, _ := os.MkdirTemp("", "store-example")
	defer os.RemoveAll(dir)
	s, err := store.Open(store.Options{Dir: dir, DefaultCountry: "1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	_, err = s.Append(context.Background(), &store.Consent{
		Subject: "(555) 123-4567", Purpose: "sales-calls", State: "granted",
		Method: "web", CapturedAt: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	recs, _ := s.Export("+1 555 123 4567")
	c, _ := recs[0].Decode()
	fmt.Println(phone.Mask(c.(*store.Consent).Subject), c.(*store.Consent).State)
	// Output: +1555***4567 granted
}

// Appends racing Close either land or get ErrClosed; none hangs.
func TestAppendRacingClose(t *testing.T) {
	for range 20 {
		s, err := store.Open(store.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 8)
		for range 8 {
			go func() {
				for {
					if _, err := s.Append(context.Background(), usage("+15551234567")); err != nil {
						done <- err
						return
					}
				}
			}()
		}
		s.Close()
		for range 8 {
			select {
			case err := <-done:
				if !errors.Is(err, store.ErrClosed) {
					t.Fatalf("append after close: %v, want ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("an append hung across Close")
			}
		}
	}
}

// The checkpoint of calls in progress: replaced whole by each save, kept
// by erase-all, and a usage record naming a call removes the call from it
// in the record's own commit. The document of an older agent is returned
// until the first save.
func TestCallsInProgress(t *testing.T) {
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir)
	if cp, err := db.CallsInProgress(); err != nil || !cp.At.IsZero() || len(cp.Calls) != 0 || cp.Legacy != nil {
		t.Fatalf("fresh store: %+v, %v; want an empty checkpoint", cp, err)
	}
	db.Close()
	store.SetLegacyCallsForTest(t, filepath.Join(dir, store.FileName), []byte(`{"calls":[]}`))
	db = storetest.OpenDir(t, dir)
	if cp, _ := db.CallsInProgress(); string(cp.Legacy) != `{"calls":[]}` {
		t.Fatalf("legacy document = %q", cp.Legacy)
	}
	at := t0.Add(time.Minute)
	if err := db.SaveCallsInProgress(t0, map[string][]byte{"old": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveCallsInProgress(at, map[string][]byte{"a@pbx": []byte(`{"n":1}`), "b@pbx": []byte(`{"n":2}`)}); err != nil {
		t.Fatal(err)
	}
	u := usage("+15551234567")
	u.CallID = "a@pbx"
	ids := mustAppend(t, db, u, usage("+15557654321"))
	cp, err := db.CallsInProgress()
	if err != nil {
		t.Fatal(err)
	}
	if !cp.At.Equal(at) || cp.Legacy != nil || len(cp.Calls) != 1 || string(cp.Calls["b@pbx"]) != `{"n":2}` {
		t.Errorf("checkpoint = at %v, calls %q, legacy %q; want at %v, only b@pbx, no legacy", cp.At, cp.Calls, cp.Legacy, at)
	}
	for _, r := range pending(t, db, store.TypeUsage) {
		if p, _ := r.Decode(); r.ID == ids[0] && p.(*store.Usage).CallID != "a@pbx" {
			t.Errorf("usage call_id = %q, want a@pbx", p.(*store.Usage).CallID)
		}
	}
	if _, err := db.EraseAll(); err != nil {
		t.Fatal(err)
	}
	if cp, _ := db.CallsInProgress(); len(cp.Calls) != 1 {
		t.Errorf("erase all left %d calls in progress, want 1: they hold no personal data and are still to be metered", len(cp.Calls))
	}
}
