package sync_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store/storetest"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// runNamedDevice starts a sync client for the device id and topic prefix
// with n records waiting.
func runNamedDevice(t *testing.T, url, id, prefix string, k keys, n int) (*lpsync.Client, []string) {
	t.Helper()
	db := storetest.Open(t)
	ids := fill(t, db, n, remoteN)
	c, err := lpsync.New(lpsync.Options{
		Brokers: []string{url}, DeviceID: id, TopicPrefix: prefix, Store: db.Store,
		Verifier:   &command.Verifier{Keys: map[string]ed25519.PublicKey{"platform-2026": k.pub}, Device: id},
		Handler:    &handler{db: db},
		Status:     func() lpsync.Status { return lpsync.Status{Version: "test"} },
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, ids
}

// TestNATSDotInTopics: the pinned nats-server maps a '.' in an MQTT topic
// level to '//' in its subject and back (nats-server PR 4243, in 2.10;
// Debian's 2.9 refuses such topics), so a topic prefix with one works:
// records up under a '+' subscription, a command down, its receipt up.
// A '.' in the device id is another matter: NATS refuses it as an MQTT
// client id, in every version (a client id must be a valid NATS name),
// and the device id is the client id. That device never connects, while
// one without the '.' does, on the same cluster.
func TestNATSDotInTopics(t *testing.T) {
	cl := synctest.StartNATSClusterT(t)
	url := cl.MQTTURLs()[0]
	const prefix = "leadport.v1"
	plat := connectWatcher(t, url, "platform", nil, prefix+"/dev/+/+")
	k := newKeys(t)
	c, ids := runNamedDevice(t, url, device, prefix, k, 500)
	waitFor(t, 20*time.Second, "the device subscribed", func() bool { return c.Stats().Subscribed })
	col := synctest.NewCollector(t)
	plat.collect(col, 30*time.Second, "the records under "+prefix, func() bool { return col.Received() >= len(ids) })
	col.Duplicates(ids)
	for topic := range col.Msg {
		if !strings.HasPrefix(topic, prefix+"/dev/"+device+"/") {
			t.Errorf("a batch came on %s, want %s/dev/%s/...", topic, prefix, device)
		}
	}
	plat.publish(prefix+"/dev/"+device+"/cmd", signed(t, k, "platform-2026", cmd("dot-ping", "ping", device, "")), false)
	plat.collect(col, 20*time.Second, "the ping's receipt", func() bool {
		col.Mu.Lock()
		defer col.Mu.Unlock()
		for _, p := range col.Msg[prefix+"/dev/"+device+"/receipt"] {
			if bytes.Contains(p, []byte(`"command_id":"dot-ping"`)) {
				return true
			}
		}
		return false
	})

	// The same cluster refuses a client id with a '.' (CONNACK 2), and
	// the device says so.
	dotted, _ := runNamedDevice(t, url, "pbx.0042", prefix, k, 1)
	waitFor(t, 20*time.Second, "the dotted device's failed connection", func() bool { return dotted.Stats().LastError != "" })
	if s := dotted.Stats(); s.Connects != 0 || s.Connected || !strings.Contains(s.LastError, "identifier rejected") {
		t.Errorf("a device id with a '.' on NATS: %+v, want refused as \"identifier rejected\"", s)
	}
}
