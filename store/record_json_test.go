package store_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

// TestAppendJSON: the spliced JSON of every record type is the same object
// MarshalJSON gives.
func TestAppendJSON(t *testing.T) {
	db := storetest.Open(t)
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	_, err := db.Append(context.Background(),
		&store.Usage{Line: "+15551230001", Direction: "outbound", Remote: "+12125550100", StartedAt: at, EndedAt: at, Disposition: "failed", FinalStatus: 503},
		&store.Usage{Line: "+15551230001", Direction: "inbound", StartedAt: at, EndedAt: at, Disposition: "busy"},
		&store.Consent{Subject: "+12125550100", Purpose: "sales", State: "granted", Method: "web", CapturedAt: at, Evidence: "form \"7\"", RecordedBy: "tech"},
		&store.Violation{Rule: "pacing", Line: "+15551230001", Action: "blocked", At: at, CallID: "c1",
			Evidence: json.RawMessage(`{"signal":"parallel","parallel":2}`), Numbers: []string{"+12125550100", "+13125550100"}},
		&store.Violation{Rule: "trunking.concurrent", Line: "+15551230001", Action: "observed", At: at},
		&store.Violation{Rule: "pacing", Line: "+15551230001", Action: "observed", At: at, CallID: "c2", Confidence: "suspect", Score: 0.5,
			Evidence: json.RawMessage(`{"signal":"after_call_work","fast_after_conversation":2}`)},
		&store.Receipt{CommandID: "c-1", Status: "done", At: at, Result: json.RawMessage(`{"records":[1,2]}`), Subject: "+12125550100"},
		&store.Receipt{CommandID: "c-2", Status: "rejected", Reason: "expired", At: at},
	)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, typ := range store.Types {
		recs, err := db.Pending(typ, store.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			n++
			want, err := r.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			var a, b map[string]any
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatalf("%s: AppendJSON gave invalid JSON %s: %v", typ, got, err)
			}
			json.Unmarshal(want, &b)
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s:\n AppendJSON  %s\n MarshalJSON %s", typ, got, want)
			}
			if typ == store.TypeConsent && a["recorded_by"] != "tech" {
				t.Errorf("consent sent as %s, want recorded_by tech", got)
			}
			if typ == store.TypeViolation && a["call_id"] == "c2" && (a["confidence"] != "suspect" || a["score"] != 0.5) {
				t.Errorf("suspect report sent as %s, want confidence suspect and score 0.5", got)
			}
		}
	}
	if n != 8 {
		t.Fatalf("%d records, want 8", n)
	}
}
