package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

// store scan on a store the store package wrote: the subject is found
// (exit 1) in whatever form the officer types it, until it is erased;
// then nothing is (exit 0). The number itself is never printed.
func TestStoreScan(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+data+"\ndefault_country: \"1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongKey := filepath.Join(dir, "wrong.yaml")
	if err := os.WriteFile(filepath.Join(dir, "other.key"), bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongKey, []byte("data_dir: "+data+"\ndefault_country: \"1\"\nstore: {key_file: "+filepath.Join(dir, "other.key")+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const subject, other = "+12125550199", "+13125550100"
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	db := storetest.OpenDir(t, data)
	if _, err := db.Append(t.Context(),
		&store.Usage{Line: "+15551230001", Direction: "outbound", Remote: "(212) 555-0199", DurationS: 60, Disposition: "answered"},
		&store.Consent{Subject: subject, Purpose: "sales-calls", State: "granted", Method: "web", CapturedAt: at},
		&store.Usage{Line: "+15551230001", Direction: "outbound", Remote: other, DurationS: 30, Disposition: "answered"},
	); err != nil {
		t.Fatal(err)
	}
	db.Close() // the agent is stopped; a running one is read the same way

	steps := []struct {
		name    string
		erase   bool // erase the subject before this step
		args    []string
		code    int
		want    []string
		wantNot []string
	}{
		{"held, typed as dialled", false, []string{"--subject", "212-555-0199"}, 1,
			[]string{"+1212***0199", "FOUND", "sealed fields of the subject that open", "remote of usage record"}, nil},
		{"held, json", false, []string{"--subject", "tel:+1-212-555-0199", "--json"}, 1, []string{`"found": true`}, nil},
		{"another subject is not this one", false, []string{"--subject", "+12125550198"}, 0, []string{"NOTHING"}, nil},
		{"wrong key", false, []string{"--subject", subject, "--config", wrongKey}, 1, []string{"device key does not match"}, []string{"NOTHING"}},
		{"not a number", false, []string{"--subject", "1001"}, 1, []string{"--subject", "not an E.164 number"}, nil},
		{"no subject", false, nil, 2, []string{"usage: leadport-agent store scan"}, nil},
		// The key still opens the other subject's record: finding
		// nothing of this one means something.
		{"erased", true, []string{"--subject", subject}, 0, []string{"NOTHING", "key      opened"}, []string{"FOUND", "opened 0 data keys"}},
		{"erased, json", false, []string{"--subject", "2125550199", "--json"}, 0, []string{`"found": false`}, nil},
		{"the other subject is kept", false, []string{"--subject", other}, 1, []string{"FOUND"}, nil},
	}
	for _, s := range steps {
		if s.erase {
			db := storetest.OpenDir(t, data)
			if res, err := db.EraseSubject(subject); err != nil || res.UsageRedacted != 1 || res.ConsentDeleted != 1 {
				t.Fatalf("erase = %+v, %v", res, err)
			}
			db.Close()
		}
		args := append([]string{"store", "scan", "--config", cfg}, s.args...)
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if code != s.code {
			t.Errorf("%s: exit %d, want %d\n%s", s.name, code, s.code, out)
		}
		for _, w := range s.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", s.name, w, out)
			}
		}
		for _, w := range append(s.wantNot, "2125550199", "555-0199") {
			if strings.Contains(out, w) {
				t.Errorf("%s: output holds %q:\n%s", s.name, w, out)
			}
		}
		if slicesHas(s.args, "--json") {
			var rep struct {
				Found  bool          `json:"found"`
				Fields []store.Trace `json:"fields"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Errorf("%s: --json printed %q: %v", s.name, stdout.String(), err)
			}
			if rep.Found != (len(rep.Fields) > 0) {
				t.Errorf("%s: found %v with %d fields", s.name, rep.Found, len(rep.Fields))
			}
		}
	}
}

func slicesHas(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
