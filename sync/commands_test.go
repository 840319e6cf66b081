package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
	"github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// receipts returns the receipts in the outbox and those already sent.
func receipts(t testing.TB, db *storetest.DB, b *synctest.Broker) map[string]*store.Receipt {
	t.Helper()
	out := map[string]*store.Receipt{}
	recs, err := db.Pending(store.TypeReceipt, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		p, err := r.Decode()
		if err != nil {
			t.Fatal(err)
		}
		rc := p.(*store.Receipt)
		out[rc.CommandID] = rc
	}
	b.Got.Mu.Lock()
	defer b.Got.Mu.Unlock()
	for _, payload := range b.Got.Msg["leadport/v1/dev/"+device+"/receipt"] {
		var batch struct{ Records []*store.Receipt }
		if err := json.Unmarshal(payload, &batch); err != nil {
			t.Fatal(err)
		}
		for _, rc := range batch.Records {
			out[rc.CommandID] = rc
		}
	}
	return out
}

func signed(t testing.TB, k keys, kid string, c command.Command) []byte {
	t.Helper()
	s, err := command.Sign(c, kid, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

func cmd(id, typ, dev string, args string) command.Command {
	now := time.Now()
	c := command.Command{ID: id, Type: typ, Device: dev, IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour)}
	if args != "" {
		c.Args = json.RawMessage(args)
	}
	return c
}

// TestCommandMatrix sends each kind of command through the broker: each
// gets exactly one receipt with the right status and reason, and only the
// valid ones act.
func TestCommandMatrix(t *testing.T) {
	b := synctest.StartBroker(t)
	p := newPlatform(t, b)
	db := storetest.Open(t)
	k, other := newKeys(t), newKeys(t)
	h := &handler{db: db}
	runClient(t, db, k, h, b.URL())
	devTopic, fleetTopic := "leadport/v1/dev/"+device+"/cmd", "leadport/v1/fleet/cmd"

	expired := cmd("c-expired", "ping", device, "")
	expired.IssuedAt, expired.ExpiresAt = time.Now().Add(-3*time.Hour), time.Now().Add(-time.Hour)
	future := cmd("c-future", "ping", device, "")
	future.IssuedAt, future.ExpiresAt = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
	tests := []struct {
		id, topic   string
		token       []byte
		status, why string
		acts        bool
	}{
		{"c-valid", devTopic, signed(t, k, "platform-2026", cmd("c-valid", "ping", device, "")), "done", "", true},
		{"c-fleet", fleetTopic, signed(t, k, "platform-2026", cmd("c-fleet", "ping", "*", "")), "done", "", true},
		{"c-badsig", devTopic, signed(t, other, "platform-2026", cmd("c-badsig", "ping", device, "")), "rejected", "bad_signature", false},
		{"c-kid", devTopic, signed(t, k, "platform-1999", cmd("c-kid", "ping", device, "")), "rejected", "unknown_key", false},
		{"c-expired", devTopic, signed(t, k, "platform-2026", expired), "rejected", "expired", false},
		{"c-future", devTopic, signed(t, k, "platform-2026", future), "rejected", "not_yet_valid", false},
		{"c-other", fleetTopic, signed(t, k, "platform-2026", cmd("c-other", "ping", "pbx-9999", "")), "rejected", "wrong_device", false},
		{"c-type", devTopic, signed(t, k, "platform-2026", cmd("c-type", "reboot", device, "")), "rejected", "unsupported", false},
		{"c-args", devTopic, signed(t, k, "platform-2026", cmd("c-args", "erase", device, `{"subject":1}`)), "rejected", "malformed", false},
	}
	for _, tt := range tests {
		p.publish(tt.topic, tt.token, false)
	}
	// Malformed JSON cannot name its command: its receipt says "unreadable".
	p.publish(devTopic, []byte("{not a jws"), false)
	waitFor(t, 20*time.Second, "a receipt for every command", func() bool { return len(receipts(t, db, b)) == len(tests)+1 })
	got := receipts(t, db, b)
	for _, tt := range tests {
		rc := got[tt.id]
		if rc == nil || rc.Status != tt.status || rc.Reason != tt.why {
			t.Errorf("%s: receipt %+v, want %s %q", tt.id, rc, tt.status, tt.why)
		}
	}
	if rc := got["unreadable"]; rc == nil || rc.Reason != "malformed" {
		t.Errorf("unreadable command: receipt %+v, want rejected malformed", rc)
	}
	if done := h.executed(); len(done) != 2 || !strings.Contains(strings.Join(done, ","), "c-valid") {
		t.Errorf("executed %v, want c-valid and c-fleet only", done)
	}

	// The same command again: rejected as replayed, and not run.
	p.publish(devTopic, tests[0].token, false)
	waitFor(t, 10*time.Second, "the replay's receipt", func() bool {
		return countReceipts(t, db, b, "c-valid") == 2
	})
	if done := h.executed(); len(done) != 2 {
		t.Errorf("a replay ran: executed %v", done)
	}
}

// receiptsFor returns the receipts for a command id, pending and sent,
// each once.
func receiptsFor(t testing.TB, db *storetest.DB, b *synctest.Broker, id string) []*store.Receipt {
	t.Helper()
	var out []*store.Receipt
	seen := map[string]bool{}
	recs, err := db.Pending(store.TypeReceipt, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		p, err := r.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if rc := p.(*store.Receipt); rc.CommandID == id {
			seen[r.ID] = true
			out = append(out, rc)
		}
	}
	b.Got.Mu.Lock()
	defer b.Got.Mu.Unlock()
	for _, payload := range b.Got.Msg["leadport/v1/dev/"+device+"/receipt"] {
		var batch struct{ Records []*store.Receipt }
		if err := json.Unmarshal(payload, &batch); err != nil {
			t.Fatal(err)
		}
		for _, rc := range batch.Records {
			if rc.CommandID == id && !seen[rc.ID] {
				seen[rc.ID] = true
				out = append(out, rc)
			}
		}
	}
	return out
}

func countReceipts(t testing.TB, db *storetest.DB, b *synctest.Broker, id string) int {
	return len(receiptsFor(t, db, b, id))
}

// TestReplayAfterRestart: the ledger outlives the client: a command seen
// before a restart is a replay after it.
func TestReplayAfterRestart(t *testing.T) {
	b := synctest.StartBroker(t)
	p := newPlatform(t, b)
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir)
	k := newKeys(t)
	h := &handler{db: db}
	ctx, cancel := context.WithCancel(context.Background())
	first := runClientCtx(t, ctx, db, k, h, b.URL())
	token := signed(t, k, "platform-2026", cmd("c-once", "ping", device, ""))
	p.publish("leadport/v1/dev/"+device+"/cmd", token, false)
	waitFor(t, 10*time.Second, "the first receipt", func() bool { return countReceipts(t, db, b, "c-once") == 1 })
	cancel()
	<-first

	runClient(t, db, k, h, b.URL())
	p.publish("leadport/v1/dev/"+device+"/cmd", token, false)
	waitFor(t, 10*time.Second, "the replay's receipt", func() bool { return countReceipts(t, db, b, "c-once") == 2 })
	var reasons []string
	for _, rc := range receiptsFor(t, db, b, "c-once") {
		reasons = append(reasons, rc.Status+"/"+rc.Reason)
	}
	if strings.Join(reasons, ",") != "done/,rejected/replayed" && strings.Join(reasons, ",") != "rejected/replayed,done/" {
		t.Errorf("receipts %v, want one done and one rejected as replayed", reasons)
	}
	if done := h.executed(); len(done) != 1 {
		t.Errorf("executed %v after the restart, want the command once", done)
	}
}

// TestPolicyVersions: a retained policy applies when newer, an older one
// is ignored, and a retained message delivered again on reconnect is not
// answered twice, whether it was applied or rejected.
func TestPolicyVersions(t *testing.T) {
	b := synctest.StartBroker(t)
	p := newPlatform(t, b)
	db := storetest.Open(t)
	k := newKeys(t)
	h := &handler{db: db}
	c := runClient(t, db, k, h, b.URL())
	fleetPolicy, devPolicy := "leadport/v1/fleet/policy", "leadport/v1/dev/"+device+"/policy"
	p.publish(fleetPolicy, signed(t, k, "platform-2026", cmd("pol-3", "policy", "*", `{"version":3}`)), true)
	waitFor(t, 10*time.Second, "policy 3 in force", func() bool { return h.PolicyVersion() == 3 })
	p.publish(devPolicy, signed(t, k, "platform-2026", cmd("pol-2", "policy", device, `{"version":2}`)), true)
	p.publish("leadport/v1/dev/"+device+"/cmd", signed(t, k, "platform-2026", cmd("pol-5", "policy", device, `{"version":5}`)), false)
	waitFor(t, 10*time.Second, "policy 5 in force and answered", func() bool {
		return h.PolicyVersion() == 5 && receipts(t, db, b)["pol-5"] != nil
	})
	if rc := receipts(t, db, b)["pol-5"]; rc.Status != "done" {
		t.Errorf("policy command receipt = %+v, want done", rc)
	}
	// A tie: the device's own policy beats the fleet's, not the reverse.
	p.publish(fleetPolicy, signed(t, k, "platform-2026", cmd("pol-5-fleet", "policy", "*", `{"version":5}`)), true)
	p.publish(devPolicy, signed(t, k, "platform-2026", cmd("pol-6-dev", "policy", device, `{"version":6}`)), true)
	waitFor(t, 10*time.Second, "policy 6 in force", func() bool { return h.PolicyVersion() == 6 })
	p.publish(fleetPolicy, signed(t, k, "platform-2026", cmd("pol-6-fleet", "policy", "*", `{"version":6}`)), true)
	fleet7 := signed(t, k, "platform-2026", cmd("pol-7-fleet", "policy", "*", `{"version":7}`))
	p.publish(fleetPolicy, fleet7, true)
	waitFor(t, 10*time.Second, "policy 7 in force", func() bool { return h.PolicyVersion() == 7 })
	const want = "pol-3,pol-5,pol-6-dev,pol-7-fleet"
	if done := strings.Join(h.executed(), ","); done != want {
		t.Errorf("executed %s, want %s (older ones and the fleet's tie ignored)", done, want)
	}
	// A retained policy the device rejects (signed by a key it does not
	// trust) is answered once.
	forged := signed(t, newKeys(t), "platform-2026", cmd("pol-forged", "policy", device, `{"version":9}`))
	p.publish(devPolicy, forged, true)
	waitFor(t, 10*time.Second, "the forged policy's receipt", func() bool { return countReceipts(t, db, b, "pol-forged") == 1 })
	if rc := receiptsFor(t, db, b, "pol-forged")[0]; rc.Status != "rejected" || rc.Reason != "bad_signature" {
		t.Errorf("forged policy receipt = %+v, want rejected bad_signature", rc)
	}

	// Every policy so far came while the client was subscribed: none was
	// a retained delivery. Drop the connection; on the new one the broker
	// sends both retained policies again (the client takes the policies at
	// QoS 0: retained, they come with every subscribe). Commands are
	// carried out one at a time in the order they came, so once a ping
	// sent after them is acknowledged (its receipt stored), a second
	// answer to a policy would be in the store or at the broker.
	redelivered := func(topic string, token []byte) int {
		n := 0
		for _, m := range b.Sent0(device, topic) {
			if m.Retained && bytes.Equal(m.Payload, token) {
				n++
			}
		}
		return n
	}
	if n, m := redelivered(fleetPolicy, fleet7), redelivered(devPolicy, forged); n != 0 || m != 0 {
		t.Fatalf("retained deliveries before the reconnect: %d and %d, want none", n, m)
	}
	b.Kick(device)
	waitFor(t, 20*time.Second, "a new connection on which both retained policies came again", func() bool {
		return c.Stats().Connects == 2 && redelivered(fleetPolicy, fleet7) == 1 && redelivered(devPolicy, forged) == 1
	})
	cmdTopic := "leadport/v1/dev/" + device + "/cmd"
	ping := signed(t, k, "platform-2026", cmd("ping-after", "ping", device, `{}`))
	p.publish(cmdTopic, ping, false)
	waitFor(t, 10*time.Second, "the ping after the policies acknowledged", func() bool {
		for _, m := range b.Acked(device, cmdTopic) {
			if bytes.Equal(m.Payload, ping) {
				return true
			}
		}
		return false
	})
	if done := strings.Join(h.executed(), ","); done != want+",ping-after" {
		t.Errorf("after the reconnect: executed %s, want %s still, then the ping", done, want)
	}
	for _, id := range []string{"pol-3", "pol-5", "pol-6-dev", "pol-7-fleet", "pol-forged"} {
		if n := countReceipts(t, db, b, id); n != 1 {
			t.Errorf("after the reconnect: %d receipts for %s, want 1", n, id)
		}
	}
	if v := h.PolicyVersion(); v != 7 {
		t.Errorf("after the reconnect: policy %d in force, want 7", v)
	}
}
