package main

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"
)

// A ledger files each receipt by the command it answers: the current
// command's, or a late one of an earlier command.
func TestFleetEraseLedgerTake(t *testing.T) {
	cases := []struct {
		name      string
		receipt   string
		wantState string
		wantNote  bool
	}{
		{"done", `{"command_id":"c2","status":"done","result":{"usage_redacted":3}}`, eraseDone, false},
		{"rejected", `{"command_id":"c2","status":"rejected","reason":"unknown_key"}`, eraseRejected, false},
		{"failed", `{"command_id":"c2","status":"failed","reason":"store: disk full"}`, eraseFailed, false},
		{"replayed: the device has it, its own receipt tells", `{"command_id":"c2","status":"rejected","reason":"replayed"}`, erasePending, true},
		{"late done of an earlier command", `{"command_id":"c1","status":"done","result":{}}`, eraseDone, true},
		{"earlier command expired: the current one stands", `{"command_id":"c1","status":"rejected","reason":"expired"}`, erasePending, false},
		{"another command's receipt", `{"command_id":"ping-7","status":"done"}`, erasePending, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := &eraseLedger{Devices: map[string]*eraseDevice{
				"pbx-1": {State: erasePending, CommandID: "c2", Earlier: []string{"c1"}},
			}}
			l.take("leadport/v1/dev/pbx-1/receipt", []byte(`{"v":1,"device":"pbx-1","batch":"b","records":[`+tc.receipt+`]}`), "leadport/v1")
			e := l.Devices["pbx-1"]
			if e.State != tc.wantState || (e.Note != "") != tc.wantNote {
				t.Errorf("state %q note %q; want %q, note %v", e.State, e.Note, tc.wantState, tc.wantNote)
			}
		})
	}
}

// A ledger is of one erase: a rerun for another subject, or for all data,
// is refused rather than mixed in; one for the same subject in another
// spelling reads it back.
func TestFleetEraseLedgerOfAnotherErase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "erase.json")
	l, err := openLedger(path, "+1 (212) 555-0188", false, "k")
	if err != nil {
		t.Fatal(err)
	}
	l.Devices["pbx-1"] = &eraseDevice{State: erasePending, CommandID: "c1", ExpiresAt: time.Now().Add(time.Hour)}
	if err := l.save(path); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		subject string
		all     bool
		ok      bool
	}{
		{"+12125550188", false, true},
		{"+12125550199", false, false},
		{"", true, false},
	}
	for _, tc := range cases {
		got, err := openLedger(path, tc.subject, tc.all, "k")
		if (err == nil) != tc.ok {
			t.Errorf("open for %q all=%v: %v; want ok %v", tc.subject, tc.all, err, tc.ok)
		}
		if err == nil && got.Devices["pbx-1"] == nil {
			t.Errorf("open for %q: the device's entry was not read back", tc.subject)
		}
	}
	// The ledger holds the masked number only in its own fields.
	var raw map[string]json.RawMessage
	b, _ := json.Marshal(l)
	json.Unmarshal(b, &raw)
	if string(raw["subject"]) != `"+1212***0188"` {
		t.Errorf("ledger subject %s, want the masked number", raw["subject"])
	}
}
