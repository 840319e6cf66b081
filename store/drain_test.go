package store_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

// TestDrainJSON: a Drain reading batch after batch, with one record
// buffer, one field buffer and its keys kept between records, gives each
// record as MarshalJSON does, whatever came before it: records with no
// personal field, one, several under different keys, and one larger than
// the buffer it keeps; batches stay within their bound.
func TestDrainJSON(t *testing.T) {
	db := storetest.Open(t)
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	big := json.RawMessage(`{"records":["` + strings.Repeat("x", 100<<10) + `"]}`)
	var ps []store.Payload
	for i := range 3 {
		ps = append(ps,
			&store.Usage{Line: "+15551230001", Direction: "outbound", Remote: "+12125550100", StartedAt: at, EndedAt: at, Disposition: "failed", FinalStatus: 503},
			&store.Usage{Line: "+15551230001", Direction: "inbound", StartedAt: at, EndedAt: at, Disposition: "busy"},
			&store.Usage{Line: "+15551230001", Direction: "inbound", Remote: "+13125550100", StartedAt: at, EndedAt: at, Disposition: "answered", DurationS: float64(i)},
			&store.Consent{Subject: "+12125550100", Purpose: "sales", State: "granted", Method: "web", CapturedAt: at, Evidence: "form \"7\"", RecordedBy: "tech"},
			&store.Consent{Subject: "+14155550100", Purpose: "sales", State: "withdrawn", Method: "ivr", CapturedAt: at},
			&store.Violation{Rule: "pacing", Line: "+15551230001", Action: "blocked", At: at, CallID: "c1",
				Evidence: json.RawMessage(`{"signal":"parallel","parallel":2}`), Numbers: []string{"+12125550100", "+13125550100", "+14155550100"}},
			&store.Violation{Rule: "trunking.concurrent", Line: "+15551230001", Action: "observed", At: at},
			&store.Violation{Rule: "pacing", Line: "+15551230001", Action: "observed", At: at, Numbers: []string{"+14155550100"}},
			&store.Receipt{CommandID: "c-1", Status: "done", At: at, Result: json.RawMessage(`{"records":[1,2]}`), Subject: "+12125550100"},
			&store.Receipt{CommandID: "c-2", Status: "rejected", Reason: "expired", At: at},
			&store.Receipt{CommandID: "c-3", Status: "done", At: at, Result: big, Subject: "+13125550100"},
			&store.Receipt{CommandID: "c-4", Status: "done", At: at, Result: json.RawMessage(`{"n":1}`), Subject: "+13125550100"},
		)
	}
	if _, err := db.Append(context.Background(), ps...); err != nil {
		t.Fatal(err)
	}
	d := db.NewDrain()
	for _, typ := range store.Types {
		recs, err := db.Pending(typ, store.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var want []map[string]any
		for _, r := range recs {
			b, err := r.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			want = append(want, m)
		}
		var got []map[string]any
		var after uint64
		buf := []byte("junk")
		for {
			const max = 600
			var rg store.Range
			var n int
			buf, rg, n, err = d.AppendPendingJSON(buf[:0], typ, after, max)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				if rg.First != 0 || len(buf) != 0 {
					t.Fatalf("%s: nothing read, but range %+v and %q", typ, rg, buf)
				}
				break
			}
			if n > 1 && len(buf) > max {
				t.Errorf("%s: a batch of %d records is %d bytes, over %d", typ, n, len(buf), max)
			}
			var batch []map[string]any
			if err := json.Unmarshal(append(append([]byte("["), buf...), ']'), &batch); err != nil {
				t.Fatalf("%s: %v in %s", typ, err, buf)
			}
			if len(batch) != n || rg.First != recs[len(got)].Seq || rg.Last != recs[len(got)+n-1].Seq {
				t.Fatalf("%s: %d records in range %+v, reported %d", typ, len(batch), rg, n)
			}
			got = append(got, batch...)
			after = rg.Last
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the drain gave\n %v\nwant\n %v", typ, got, want)
		}
	}
}
