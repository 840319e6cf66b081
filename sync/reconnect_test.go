package sync_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// TestCommandsFirstOnReconnect: the subject calls while the device cannot
// reach the broker; the platform queues an erase for the subject in the
// device's session; the device comes back. It must carry out the erase
// before it uploads anything: none of the subject's records reaches the
// platform with the number, and the receipt counts them redacted. Through
// mochi-mqtt, Debian's NATS and a three-node NATS cluster (the session
// kept by the broker, the network cut by a gate) and through mosquitto
// restarted with its state on disk.
func TestCommandsFirstOnReconnect(t *testing.T) {
	// The order is what is tested here, not the bound on the wait
	// (TestBarrierTimeout): a three-node NATS cluster on a CI machine
	// running every package at once took the barrier past the default
	// 5 s once, and the backlog went up before the erase.
	barrierTimeout = 30 * time.Second
	defer func() { barrierTimeout = 0 }()
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
		{"nats cluster (three nodes, the session replicated)", func(t *testing.T) (string, func(), func()) {
			if testing.Short() {
				t.Skip("a three-node cluster takes seconds to form")
			}
			cl := synctest.StartNATSClusterT(t)
			return strings.TrimPrefix(cl.MQTTURLs()[0], "tcp://"), func() {}, func() {}
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

// TestBarrierLostUploadsAnyway: a broker that drops the device's barrier
// (here: every publish on its command topic, as a broker whose ACL refused
// it would) delays the upload by BarrierTimeout, never more: the backlog
// still arrives, and the wait is logged.
func TestBarrierLostUploadsAnyway(t *testing.T) {
	b := synctest.StartBroker(t)
	b.Stall("leadport/v1/dev/" + device + "/cmd")
	db := storetest.Open(t)
	ids := fill(t, db, 50, remoteN)
	k := newKeys(t)
	var logged strings.Builder
	var logMu gosync.Mutex
	const timeout = 300 * time.Millisecond
	c, err := lpsync.New(lpsync.Options{
		Brokers: []string{b.URL()}, DeviceID: device, Store: db.Store,
		Verifier: &command.Verifier{Keys: map[string]ed25519.PublicKey{"platform-2026": k.pub}, Device: device},
		Handler:  &handler{db: db}, BarrierTimeout: timeout,
		BackoffMin: 50 * time.Millisecond, Idle: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 20*time.Second, "the backlog at the broker", func() bool { return b.Got.Received() == len(ids) })
	if took := time.Since(start); took < timeout {
		t.Errorf("the backlog arrived %s after the start, before the barrier's %s were up: the upload did not wait for it", took, timeout)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logged.String(), "the barrier did not come back") {
		t.Errorf("the lost barrier was not logged:\n%s", logged.String())
	}
}

type lockedWriter struct {
	mu *gosync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
