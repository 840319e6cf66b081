package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store/phone"
)

var collectAt = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func allTypes() map[string]bool {
	m := map[string]bool{}
	for _, t := range collectTypes() {
		m[t] = true
	}
	return m
}

// TestCollectParseBatch: what parseBatch takes and what it refuses, with
// the reason. The reasons name no value from the payload.
func TestCollectParseBatch(t *testing.T) {
	const good = `{"v":1,"device":"pbx-1","batch":"B1","records":[{"id":"R1","type":"usage","remote":"+12125550188"},{"id":"R2","type":"usage","note":"<a&b>"}]}`
	tests := []struct {
		name, topic, payload string
		types                []string // default: all
		records              int
		reason               string // "" when taken
	}{
		{"good", "leadport/v1/dev/pbx-1/usage", good, nil, 2, ""},
		{"empty batch", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"pbx-1","batch":"B1","records":[]}`, nil, 0, ""},
		{"unknown fields kept out", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"pbx-1","batch":"B1","extra":7,"records":[]}`, nil, 0, ""},
		{"pretty-printed record", "leadport/v1/dev/pbx-1/consent", "{\"v\":1,\"device\":\"pbx-1\",\"batch\":\"B1\",\"records\":[{\n  \"id\": \"R1\",\n  \"type\": \"consent\"\n}]}", nil, 1, ""},
		{"another prefix", "other/dev/pbx-1/usage", good, nil, 0, "topic is not leadport/v1/dev/<device>/<consent|receipt|usage|violation>"},
		{"type not collected", "leadport/v1/dev/pbx-1/usage", good, []string{"receipt"}, 0, "topic is not"},
		{"unknown type", "leadport/v1/dev/pbx-1/status", good, nil, 0, "topic is not"},
		{"bad device id", "leadport/v1/dev/pbx 1/usage", good, nil, 0, "topic is not"},
		{"deeper topic", "leadport/v1/dev/pbx-1/usage/x", good, nil, 0, "topic is not"},
		{"truncated", "leadport/v1/dev/pbx-1/usage", good[:40], nil, 0, "not a batch: JSON syntax error"},
		{"not an object", "leadport/v1/dev/pbx-1/usage", `"+12125550188"`, nil, 0, "not a batch: a JSON string at the top level"},
		{"version missing", "leadport/v1/dev/pbx-1/usage", `{"device":"pbx-1","batch":"B1","records":[]}`, nil, 0, "no version"},
		{"version 2", "leadport/v1/dev/pbx-1/usage", `{"v":2,"device":"pbx-1","batch":"B1","records":[]}`, nil, 0, "version 2, this collector reads 1"},
		{"version a string", "leadport/v1/dev/pbx-1/usage", `{"v":"1","device":"pbx-1","batch":"B1","records":[]}`, nil, 0, "a JSON string at v"},
		{"device missing", "leadport/v1/dev/pbx-1/usage", `{"v":1,"batch":"B1","records":[]}`, nil, 0, "no device"},
		{"another device", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"12125550188","batch":"B1","records":[]}`, nil, 0, "the batch's device is not the topic's"},
		{"batch id empty", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"pbx-1","batch":"","records":[]}`, nil, 0, "no batch id"},
		{"records missing", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"pbx-1","batch":"B1"}`, nil, 0, "no records array"},
		{"records an object", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"pbx-1","batch":"B1","records":{}}`, nil, 0, "a JSON object at records"},
		{"record a string", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"pbx-1","batch":"B1","records":["+12125550188"]}`, nil, 0, "record 0: not an object"},
		{"record id a number", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"pbx-1","batch":"B1","records":[{"id":12125550188,"type":"usage"}]}`, nil, 0, "record 0: no id"},
		{"record of another type", "leadport/v1/dev/pbx-1/usage", `{"v":1,"device":"pbx-1","batch":"B1","records":[{"id":"R1","type":"usage"},{"id":"R2","type":"consent"}]}`, nil, 0, `record 1: type is not "usage"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			types := allTypes()
			if tc.types != nil {
				types = map[string]bool{}
				for _, ty := range tc.types {
					types[ty] = true
				}
			}
			p, err := parseBatch("leadport/v1", tc.topic, []byte(tc.payload), collectAt, types)
			if tc.reason != "" {
				if err == nil || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("err = %v, want one with %q", err, tc.reason)
				}
				if strings.Contains(err.Error(), "12125550188") {
					t.Errorf("the reason quotes the payload: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lines := bytes.Split(bytes.TrimSuffix(p.lines, []byte{'\n'}), []byte{'\n'})
			if tc.records == 0 {
				lines = nil
				if len(p.lines) != 0 {
					t.Errorf("lines %q for an empty batch", p.lines)
				}
			}
			if p.records != tc.records || len(lines) != tc.records {
				t.Fatalf("%d records, %d lines; want %d", p.records, len(lines), tc.records)
			}
			for _, l := range lines {
				var cl collectLine
				if err := json.Unmarshal(l, &cl); err != nil {
					t.Fatalf("line %s: %v", l, err)
				}
				if cl.Device != "pbx-1" || cl.Batch != "B1" || cl.ID == "" || !cl.ReceivedAt.Equal(collectAt) {
					t.Errorf("line %s", l)
				}
			}
		})
	}
	// Records pass as sent: no HTML escaping.
	p, _ := parseBatch("leadport/v1", "leadport/v1/dev/pbx-1/usage", []byte(good), collectAt, allTypes())
	if !bytes.Contains(p.lines, []byte(`"note":"<a&b>"`)) {
		t.Errorf("record changed on the way: %s", p.lines)
	}
}

// FuzzCollectBatch: whatever arrives on a record topic, parseBatch does not
// panic; what it takes becomes one whole JSON line per record, naming the
// topic's device; what it refuses becomes one whole JSON line in
// rejected/, its reason with no number whole.
func FuzzCollectBatch(f *testing.F) {
	good := `{"v":1,"device":"pbx-1","batch":"01JEXAMPLE","records":[{"id":"R1","type":"usage","remote":"+12125550188","started_at":"2026-12-04T10:00:00Z"},{"id":"R2","type":"usage"}]}`
	for i := 0; i <= len(good); i += 7 { // truncated frames
		f.Add("usage", []byte(good[:i]))
	}
	f.Add("usage", []byte(good))
	f.Add("consent", []byte(`{"v":1,"device":"pbx-1","batch":"b","records":[{"id":"c","type":"consent","subject":"+12125550188"}]}`))
	f.Add("receipt", []byte(`{"v":1,"device":"pbx-1","batch":"b","records":[null,{"id":1}]}`))
	f.Add("usage", []byte("\xff\xfe"))
	f.Add("usage", []byte(`{"v":1e400}`))
	f.Fuzz(func(t *testing.T, typ string, payload []byte) {
		topic := "leadport/v1/dev/pbx-1/" + typ
		p, err := parseBatch("leadport/v1", topic, payload, collectAt, allTypes())
		if err != nil {
			if r := err.Error(); r != phone.MaskText(r) {
				t.Fatalf("reason with a number whole: %q", r)
			}
			l := rejected("leadport/v1", topic, payload, collectAt, err)
			if bytes.Count(l, []byte{'\n'}) != 1 || l[len(l)-1] != '\n' || !json.Valid(l) {
				t.Fatalf("rejected line %q", l)
			}
			var rl rejectLine
			if json.Unmarshal(l, &rl) != nil || (rl.Payload != string(payload) && string(rl.PayloadBase64) != string(payload)) {
				t.Fatalf("rejected line does not keep the payload: %q", l)
			}
			return
		}
		if p.device != "pbx-1" || p.typ != typ {
			t.Fatalf("took a batch as %s/%s from %s", p.device, p.typ, topic)
		}
		n := 0
		for l := range bytes.Lines(p.lines) {
			n++
			var cl collectLine
			if l[len(l)-1] != '\n' || json.Unmarshal(l, &cl) != nil || cl.ID == "" || cl.Device != "pbx-1" || cl.Type != typ {
				t.Fatalf("line %q", l)
			}
		}
		if n != p.records {
			t.Fatalf("%d lines for %d records", n, p.records)
		}
	})
}
