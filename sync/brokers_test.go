package sync_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store/storetest"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// watcher is a paho client of the platform's, or of an intruder's.
type watcher struct {
	t   testing.TB
	cli paho.Client
	got chan paho.Message
}

func connectWatcher(t testing.TB, url, clientID string, tlsConf *tls.Config, subs ...string) *watcher {
	t.Helper()
	w := &watcher{t: t, got: make(chan paho.Message, 100_000)}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(true).SetOrderMatters(true)
	if tlsConf != nil {
		opts.SetTLSConfig(tlsConf)
	}
	w.cli = paho.NewClient(opts)
	if tok := w.cli.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { w.cli.Disconnect(100) })
	for _, s := range subs {
		tok := w.cli.Subscribe(s, 1, func(_ paho.Client, m paho.Message) { w.got <- m })
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: subscribe %s: %v", clientID, s, tok.Error())
		}
	}
	return w
}

func (w *watcher) publish(topic string, payload []byte, retained bool) {
	w.t.Helper()
	if tok := w.cli.Publish(topic, 1, retained, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		w.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// collect moves what the watcher got into a collector until cond holds.
func (w *watcher) collect(c *synctest.Collector, d time.Duration, what string, cond func() bool) {
	w.t.Helper()
	deadline := time.After(d)
	for !cond() {
		select {
		case m := <-w.got:
			c.Add(m.Topic(), m.Payload())
		case <-deadline:
			w.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
	}
}

// until reads messages until the sentinel (payload mark on topic)
// arrives, and returns those before it: so a negative assertion needs no
// sleep (a broker delivers one publisher's messages in order). Marks are
// unique, so an earlier sentinel cannot end the wait too soon.
func (w *watcher) until(topic string, mark []byte, d time.Duration) []paho.Message {
	w.t.Helper()
	var before []paho.Message
	deadline := time.After(d)
	for {
		select {
		case m := <-w.got:
			if m.Topic() == topic && bytes.Equal(m.Payload(), mark) {
				return before
			}
			before = append(before, m)
		case <-deadline:
			w.t.Fatalf("sentinel %q on %s did not arrive within %s", mark, topic, d)
		}
	}
}

func syncClient(t testing.TB, db *storetest.DB, k keys, h lpsync.Handler, url string, tlsConf *tls.Config) *lpsync.Client {
	t.Helper()
	c, err := lpsync.New(lpsync.Options{
		Brokers: []string{url}, DeviceID: device, Store: db.Store, TLS: tlsConf,
		Verifier:   &command.Verifier{Keys: map[string]ed25519.PublicKey{"platform-2026": k.pub}, Device: device},
		Handler:    h,
		Status:     func() lpsync.Status { return lpsync.Status{Version: "test"} },
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, AckTimeout: 10 * time.Second,
		Idle: 50 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 20*time.Second, "the client subscribed", func() bool { return c.Stats().Subscribed })
	return c
}

// mosquittoACL binds each device to its own topics by the certificate's
// common name (%u, with use_identity_as_username), and gives it the fleet
// topics read-only. %u rather than PROTOCOL.md's %c: a client picks its
// own client id, but not its certificate.
const mosquittoACL = `user platform
topic readwrite leadport/v1/#

pattern readwrite leadport/v1/dev/%u/#
pattern read leadport/v1/fleet/#
`

// TestMosquittoTLSACL runs the drain and a command through Debian's
// mosquitto with client certificates the test made, and proves that the
// per-device ACL keeps a device from reading or writing another's topics,
// and from publishing on the fleet topics.
func TestMosquittoTLSACL(t *testing.T) {
	pki := synctest.NewPKI(t)
	m := synctest.StartMosquitto(t, pki, mosquittoACL)
	url := "ssl://" + m.Addr
	plat := connectWatcher(t, url, "platform", pki.Client(t, "platform"), "leadport/v1/dev/+/+")

	db := storetest.Open(t)
	n := 20_000
	if testing.Short() {
		n = 5000
	}
	fill(t, db, n, remoteN)
	k := newKeys(t)
	h := &handler{db: db}
	syncClient(t, db, k, h, url, pki.Client(t, device))
	col := synctest.NewCollector(t)
	plat.collect(col, time.Minute, "the drain at the platform", func() bool { return col.Received() == n })
	waitFor(t, 10*time.Second, "the outbox empty", func() bool { return pending(t, db) == 0 })

	// A reader of the fleet command topic with the platform's rights, and
	// a sentinel topic that the platform and device pbx-b may both write.
	const fleetCmd, sentinelTopic = "leadport/v1/fleet/cmd", "leadport/v1/dev/pbx-b/usage"
	reader := connectWatcher(t, url, "fleet-reader", pki.Client(t, "platform"), fleetCmd, sentinelTopic)
	sentinels := 0
	// throughFleet publishes token on the fleet command topic as pub, then
	// a sentinel, and reports whether the reader got the token: one check
	// for a publisher the ACL lets write there and for one it does not.
	throughFleet := func(pub *watcher, token []byte) bool {
		t.Helper()
		sentinels++
		mark := fmt.Appendf(nil, "fleet sentinel %d", sentinels)
		pub.publish(fleetCmd, token, false)
		pub.publish(sentinelTopic, mark, false)
		for _, m := range reader.until(sentinelTopic, mark, 10*time.Second) {
			if m.Topic() == fleetCmd && bytes.Equal(m.Payload(), token) {
				return true
			}
		}
		return false
	}
	receiptFor := func(id string) func() bool {
		return func() bool {
			col.Mu.Lock()
			defer col.Mu.Unlock()
			for _, p := range col.Msg["leadport/v1/dev/"+device+"/receipt"] {
				if bytes.Contains(p, []byte(`"command_id":"`+id+`"`)) {
					return true
				}
			}
			return false
		}
	}
	if !throughFleet(plat, signed(t, k, "platform-2026", cmd("m-ping", "ping", "*", ""))) {
		t.Fatal("the platform's fleet command did not reach a reader of the fleet topic")
	}
	plat.collect(col, 20*time.Second, "the fleet ping's receipt", receiptFor("m-ping"))

	// Another device's certificate: it may not read this device's topics
	// nor write to them.
	intruder := connectWatcher(t, url, "pbx-b", pki.Client(t, "pbx-b"),
		"leadport/v1/dev/"+device+"/#", "leadport/v1/dev/pbx-b/#", "leadport/v1/fleet/#")
	plat.publish("leadport/v1/dev/"+device+"/status", []byte(`{"probe":"read"}`), false)
	plat.publish("leadport/v1/dev/pbx-b/cmd", []byte("read sentinel"), false)
	for _, m := range intruder.until("leadport/v1/dev/pbx-b/cmd", []byte("read sentinel"), 10*time.Second) {
		if strings.Contains(m.Topic(), device) {
			t.Errorf("another device read %s", m.Topic())
		}
	}
	intruder.publish("leadport/v1/dev/"+device+"/usage", []byte(`{"v":1,"batch":"forged","records":[{"id":"forged"}]}`), false)
	intruder.publish("leadport/v1/dev/pbx-b/usage", []byte("write sentinel"), false)
	for _, m := range plat.until("leadport/v1/dev/pbx-b/usage", []byte("write sentinel"), 10*time.Second) {
		if bytes.Contains(m.Payload(), []byte("forged")) {
			t.Errorf("another device wrote to %s", m.Topic())
		}
	}

	// Nor may it publish on the fleet topic, even a command the device
	// would carry out: validly signed, for this device (a device can
	// capture one off its own topics, or the platform sent it there by
	// mistake). The signature does not stop it; only the ACL can.
	if throughFleet(intruder, signed(t, k, "platform-2026", cmd("m-stolen", "erase", device, `{"all":true}`))) {
		t.Error("another device published a command on the fleet topic")
	}
	// The platform's next fleet command comes after it on the device's
	// subscription: once that one is answered, the stolen one would have
	// been carried out.
	if !throughFleet(plat, signed(t, k, "platform-2026", cmd("m-after", "ping", "*", ""))) {
		t.Fatal("the platform's second fleet command did not reach a reader of the fleet topic")
	}
	plat.collect(col, 20*time.Second, "the second fleet ping's receipt", receiptFor("m-after"))
	if done := h.executed(); slices.Contains(done, "m-stolen") || !slices.Contains(done, "m-after") {
		t.Errorf("the device carried out %v, want m-after and not m-stolen", done)
	}
}

// TestNATS runs the drain, a command and the retained status through
// Debian's nats-server with MQTT over JetStream.
func TestNATS(t *testing.T) {
	nats := synctest.StartNATS(t)
	url := "tcp://" + nats.Addr
	plat := connectWatcher(t, url, "platform", nil, "leadport/v1/dev/+/+")
	db := storetest.Open(t)
	n := 10_000
	if testing.Short() {
		n = 3000
	}
	fill(t, db, n, remoteN)
	k := newKeys(t)
	h := &handler{db: db}
	syncClient(t, db, k, h, url, nil)
	col := synctest.NewCollector(t)
	plat.collect(col, time.Minute, "the drain at the platform", func() bool { return col.Received() == n })
	plat.publish("leadport/v1/dev/"+device+"/cmd", signed(t, k, "platform-2026", cmd("n-ping", "ping", device, "")), false)
	plat.collect(col, 20*time.Second, "the ping's receipt", func() bool {
		col.Mu.Lock()
		defer col.Mu.Unlock()
		for _, p := range col.Msg["leadport/v1/dev/"+device+"/receipt"] {
			if bytes.Contains(p, []byte(`"command_id":"n-ping"`)) {
				return true
			}
		}
		return false
	})
	// A newcomer gets the retained status at once.
	late := connectWatcher(t, url, "late", nil, "leadport/v1/dev/"+device+"/status")
	select {
	case m := <-late.got:
		if !m.Retained() || !bytes.Contains(m.Payload(), []byte(`"state":"online"`)) {
			t.Errorf("status for a newcomer: retained %v, %s", m.Retained(), m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Error("no retained status for a newcomer")
	}
}
