package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// TestCommandsFirstOnReconnect: the subject calls while the device cannot
// reach the broker; the platform queues an erase for the subject in the
// device's session; the device comes back. It must carry out the erase
// before it uploads anything: none of the subject's records reaches the
// platform with the number, and the receipt counts them redacted. Through
// mochi-mqtt and Debian's NATS (the session kept by the broker, the
// network cut by a gate) and through mosquitto restarted with its state on
// disk.
func TestCommandsFirstOnReconnect(t *testing.T) {
	cases := []struct {
		name string
		// broker starts one and returns its host:port, and what to do
		// while the device is away (restart it) and before it returns.
		broker func(t *testing.T) (addr string, away, back func())
	}{
		{"mochi", func(t *testing.T) (string, func(), func()) {
			b := synctest.StartBroker(t)
			return strings.TrimPrefix(b.URL(), "tcp://"), func() {}, func() {}
		}},
		{"mosquitto with persistence", func(t *testing.T) (string, func(), func()) {
			m := synctest.StartMosquittoPersistent(t)
			return m.Addr, m.Stop, m.Start
		}},
		{"nats (Debian's, one node)", func(t *testing.T) (string, func(), func()) {
			n := synctest.StartNATS(t)
			return n.Addr, func() {}, func() {}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, away, back := tc.broker(t)
			gate := synctest.NewGate(t, addr)
			db := storetest.Open(t)
			k := newKeys(t)
			c := runClient(t, db, k, &handler{db: db}, gate.URL())
			// The session, with its subscriptions, is in place.
			waitFor(t, 10*time.Second, "the first upload pass", func() bool { return c.Stats().Subscribed })

			gate.Shut()
			waitFor(t, 10*time.Second, "the device offline", func() bool { return !c.Stats().Connected })
			away()
			const subject = "+12125550177"
			var subjectIDs, otherIDs []string
			for i := range 16 {
				remote := fmt.Sprintf("+1312555%04d", i)
				if i%3 == 0 && len(subjectIDs) < 6 {
					remote = subject
				}
				ids, err := db.Append(context.Background(), &store.Usage{Line: "+15551230001", Direction: "inbound", Remote: remote,
					StartedAt: time.Now().Add(-time.Minute), EndedAt: time.Now(), Disposition: "answered", FinalStatus: 200})
				if err != nil {
					t.Fatal(err)
				}
				if remote == subject {
					subjectIDs = append(subjectIDs, ids[0])
				} else {
					otherIDs = append(otherIDs, ids[0])
				}
			}
			// The thing to be erased is there.
			if exp, err := db.Export(subject); err != nil || len(exp) != 6 {
				t.Fatalf("export before = %d records, %v; want 6", len(exp), err)
			}
			back()
			url := "tcp://" + addr
			w := connectWatcher(t, url, "platform-watch", nil, "leadport/v1/dev/"+device+"/usage", "leadport/v1/dev/"+device+"/receipt")
			w.publish("leadport/v1/dev/"+device+"/cmd", signed(t, k, "platform-2026", cmd("erase-queued", "erase", device, `{"subject":"`+subject+`"}`)), false)

			gate.Open()
			got := synctest.NewCollector(t)
			w.collect(got, 60*time.Second, "the backlog and the erase receipt", func() bool {
				got.Mu.Lock()
				defer got.Mu.Unlock()
				return len(got.Seq["usage"]) >= 16 && len(got.Seq["receipt"]) >= 1
			})
			got.Duplicates(append(subjectIDs, otherIDs...)) // fails if one never arrived
			got.Mu.Lock()
			defer got.Mu.Unlock()
			withNumber := 0
			for _, payload := range got.Msg["leadport/v1/dev/"+device+"/usage"] {
				var batch struct{ Records []map[string]any }
				if err := json.Unmarshal(payload, &batch); err != nil {
					t.Fatal(err)
				}
				for _, r := range batch.Records {
					if r["remote"] == subject {
						withNumber++
					}
				}
			}
			if withNumber != 0 {
				t.Errorf("%d of the subject's 6 records reached the platform with the number: the backlog went up before the queued erase", withNumber)
			}
			var rc *store.Receipt
			for _, payload := range got.Msg["leadport/v1/dev/"+device+"/receipt"] {
				var batch struct{ Records []*store.Receipt }
				if err := json.Unmarshal(payload, &batch); err != nil {
					t.Fatal(err)
				}
				for _, r := range batch.Records {
					if r.CommandID == "erase-queued" {
						rc = r
					}
				}
			}
			if rc == nil || rc.Status != "done" {
				t.Fatalf("erase receipt = %+v, want done", rc)
			}
			var res store.EraseResult
			if err := json.Unmarshal(rc.Result, &res); err != nil || res.UsageRedacted != 6 {
				t.Errorf("erase receipt result %s: want usage_redacted 6", rc.Result)
			}
		})
	}
}
