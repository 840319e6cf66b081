package sync_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store/storetest"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// publishBound is how soon after its broker node dies the device must be
// publishing through another. Issue 16 asks for 5 s; the client's part is
// milliseconds (it reconnects at once, to the next node of its list), but
// the cluster takes no write for a stream
// whose raft leader was on the dead node until the survivors elect
// another, after 4 to 9 s (nats-server's minElectionTimeout and
// maxElectionTimeout, raft.go, not configurable), and a retained publish
// (the status) that finds no leader holds the connection's read loop for
// the MQTT JetStream API timeout (js_api_timeout, 5 s) before failing:
// docs/fleet.md, "Losing a node".
const publishBound = 20 * time.Second

// heldHandler is the test handler, except that the first command of type
// hold waits inside Execute until release is closed: a command in flight
// (taken from the broker, not yet acknowledged, its receipt not yet
// stored) while the test kills the node.
type heldHandler struct {
	*handler
	hold    string
	started chan string
	release chan struct{}
}

func (h *heldHandler) Execute(ctx context.Context, c *command.Command) lpsync.Outcome {
	if c.Type == h.hold {
		select {
		case h.started <- c.ID:
			<-h.release
		default: // held once already
		}
	}
	return h.handler.Execute(ctx, c)
}

// TestNATSClusterFailover runs a device against a three-node NATS cluster
// (real nats-server processes, MQTT state replicated on all three) with
// every node in its broker list, and SIGKILLs the node it is connected to
// twice: once in the middle of a drain, once (after the first node came
// back) while a command is in flight. Each time the device must be
// publishing through another node within publishBound; in the end every record has reached
// the platform, the command was carried out once, with one receipt, and
// the broker holds no unacknowledged copy of it.
func TestNATSClusterFailover(t *testing.T) {
	// ack_wait: how soon the cluster sends the device again a command it
	// did not acknowledge (default 30 s), so the test sees the redelivery.
	start := time.Now()
	cl := synctest.StartNATSClusterT(t, `ack_wait: "3s"`)
	urls := cl.MQTTURLs()
	// The device lists all three nodes in order; the platform starts on
	// the third, with a session the cluster keeps (so it loses nothing if
	// its node is the one killed) and paho's reconnection.
	plat := clusterWatcher(t, append([]string{urls[2]}, urls[:2]...), "leadport/v1/dev/+/+")
	col := synctest.NewCollector(t)

	db := storetest.Open(t)
	if testing.Short() {
		t.Skip("kills cluster nodes and waits out raft elections: about a minute")
	}
	n := 10_000
	ids := fill(t, db, n, remoteN)
	k := newKeys(t)
	h := &heldHandler{handler: &handler{db: db}, hold: command.TypeErase, started: make(chan string, 1), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(h.release)
		}
	}()
	c, err := lpsync.New(lpsync.Options{
		Brokers: urls, DeviceID: device, Store: db.Store,
		Verifier: &command.Verifier{Keys: map[string]ed25519.PublicKey{"platform-2026": k.pub}, Device: device},
		Handler:  h,
		Status:   func() lpsync.Status { return lpsync.Status{Version: "test"} },
		// Small batches, one at a time: the drain lasts long enough to be
		// cut. The reconnection backoff is the agent's default.
		BatchBytes: 8 << 10, MaxInFlight: 1,
		Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 30*time.Second, "the device subscribed", func() bool { return c.Stats().Subscribed })

	// pump moves what the platform gets into the collector until cond
	// holds, looking at cond at least every 20 ms: a condition on the
	// device (its outbox empty) may come true after the last message.
	pump := func(d time.Duration, what string, cond func() bool) {
		t.Helper()
		deadline := time.After(d)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case m := <-plat.got:
				col.Add(m.Topic(), m.Payload())
			case <-tick.C:
			case <-deadline:
				t.Fatalf("timed out after %s waiting for %s", d, what)
			}
		}
	}

	// kill kills the node the device is on.
	kill := func(round int) (*synctest.NATSNode, lpsync.Stats) {
		t.Helper()
		s := c.Stats()
		nd := cl.Node(s.Broker)
		if nd == nil {
			t.Fatalf("round %d: the device is on %q, not a node of the cluster", round, s.Broker)
		}
		if err := cl.Kill(nd); err != nil {
			t.Fatal(err)
		}
		return nd, s
	}
	// failedOver waits until the device is connected through another node
	// than the dead one, then until a batch was acknowledged through it,
	// and checks both delays.
	failedOver := func(round int, dead *synctest.NATSNode, before lpsync.Stats, killed time.Time) {
		t.Helper()
		on := func() bool {
			s := c.Stats()
			return s.Connected && s.Connects > before.Connects && cl.Node(s.Broker) != dead
		}
		pump(30*time.Second, fmt.Sprintf("round %d: connected through another node", round), on)
		reconnected := time.Since(killed)
		pump(time.Minute, fmt.Sprintf("round %d: a batch through another node", round), func() bool {
			return on() && c.Stats().Batches > before.Batches
		})
		published := time.Since(killed)
		t.Logf("round %d: killed %s; connected through %s %s later, a batch acknowledged %s later (%d connections since the kill)",
			round, dead.Name, cl.Node(c.Stats().Broker).Name, reconnected.Round(time.Millisecond),
			published.Round(time.Millisecond), c.Stats().Connects-before.Connects)
		if published > publishBound {
			t.Errorf("round %d: publishing through another node %s after the kill, want at most %s", round, published.Round(time.Millisecond), publishBound)
		}
	}

	// Round 1: in the middle of the drain.
	pump(time.Minute, "a fifth of the backlog", func() bool { return col.Received() >= n/5 })
	dead, before := kill(1)
	failedOver(1, dead, before, time.Now())
	if got := col.Received(); got >= n {
		t.Fatalf("the drain was over (%d of %d records) before the first failover completed", got, n)
	}
	// The node comes back; the cluster has its three again.
	rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
	defer rcancel()
	if err := cl.Restart(rctx, dead); err != nil {
		t.Fatal(err)
	}

	// Round 2: an erase in flight while the drain goes on: a new backlog,
	// since the first may be over by now.
	ids = append(ids, fill(t, db, n, remoteN)...)
	n *= 2
	const cmdID = "failover-erase"
	plat.publish("leadport/v1/dev/"+device+"/cmd", signed(t, k, "platform-2026", cmd(cmdID, "erase", device, `{"subject":"`+remoteN(7)+`"}`)), false)
	select {
	case id := <-h.started:
		if id != cmdID {
			t.Fatalf("command %s held, want %s", id, cmdID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the erase did not reach the device")
	}
	if pending(t, db) == 0 {
		t.Fatal("the drain was over before the command came")
	}
	// The erase holds the uploader's gate, so no batch can be acknowledged
	// until it is released: release it right after the kill.
	dead, before = kill(2)
	killed := time.Now()
	close(h.release)
	released = true
	failedOver(2, dead, before, killed)

	t.Logf("%s: round 2 over", time.Since(start).Round(time.Millisecond))
	// Everything arrives: the backlog and the receipt.
	receipts := func() map[string]int {
		col.Mu.Lock()
		defer col.Mu.Unlock()
		got := map[string]int{} // receipt record id -> copies
		for _, p := range col.Msg["leadport/v1/dev/"+device+"/receipt"] {
			var b struct {
				Records []struct {
					ID        string `json:"id"`
					CommandID string `json:"command_id"`
					Status    string `json:"status"`
				}
			}
			if err := json.Unmarshal(p, &b); err != nil {
				t.Errorf("receipt batch: %v", err)
				continue
			}
			for _, r := range b.Records {
				if r.CommandID == cmdID {
					got[r.ID+" "+r.Status]++
				}
			}
		}
		return got
	}
	pump(2*time.Minute, "every record and the erase's receipt", func() bool {
		return col.Received() >= n+1 && pending(t, db) == 0
	})
	t.Logf("%s: drain over", time.Since(start).Round(time.Millisecond))
	dups := col.Duplicates(ids)
	// The broker sends the unacknowledged command again (DUP) once
	// ack_wait passes; the device acknowledges it without acting. Wait
	// until JetStream holds nothing unacknowledged for the device's
	// command topic.
	cmdSubject := "leadport.v1.dev." + device + ".cmd"
	var cs synctest.ConsumerState
	pump(time.Minute, "the command acknowledged to the cluster", func() bool {
		var err error
		cs, err = cl.Consumers(context.Background(), cmdSubject)
		if err != nil {
			t.Logf("consumers: %v", err)
			return false
		}
		return cs.Consumers > 0 && cs.AckPending == 0
	})
	if ex := h.executed(); len(ex) != 1 || ex[0] != cmdID {
		t.Errorf("commands carried out: %v, want %s once", ex, cmdID)
	}
	got := receipts()
	if len(got) != 1 {
		t.Errorf("receipts for %s: %v, want one", cmdID, got)
	}
	for r := range got {
		if !strings.HasSuffix(r, " done") {
			t.Errorf("receipt %s, want done", r)
		}
	}
	t.Logf("%d records, %d duplicate deliveries (%.1f %%) across 2 node kills; command redelivered %d time(s) by the cluster, carried out once",
		n, dups, 100*float64(dups)/float64(n), cs.Redelivered)
}

// clusterWatcher is the platform's client on a cluster: a session the
// broker keeps, QoS 1, reconnecting through the listed nodes by itself.
func clusterWatcher(t testing.TB, urls []string, subs ...string) *watcher {
	t.Helper()
	w := &watcher{t: t, got: make(chan paho.Message, 100_000)}
	filters := map[string]byte{}
	for _, s := range subs {
		filters[s] = 1
	}
	opts := paho.NewClientOptions().SetClientID("platform").SetCleanSession(false).SetOrderMatters(true).
		SetAutoReconnect(true).SetMaxReconnectInterval(500 * time.Millisecond).SetResumeSubs(true).
		SetOnConnectHandler(func(c paho.Client) {
			c.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) { w.got <- m })
		})
	for _, u := range urls {
		opts.AddBroker(u)
	}
	w.cli = paho.NewClient(opts)
	if tok := w.cli.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("platform: connect: %v", tok.Error())
	}
	t.Cleanup(func() { w.cli.Disconnect(100) })
	return w
}

// TestNATSSubscribeAgain: a SUBSCRIBE that a NATS node refuses (0x80) on a
// connection that stays up is sent again, with backoff, until it is taken:
// the device gets its commands without waiting for its next connection.
// The refusal is made real, not mocked: each QoS 1 subscription's consumer
// may have max_ack_pending messages out, at most 65,535 for a session, so
// at 40,000 a piece the second of the device's two (its command topics;
// the retained policies are taken at QoS 0 and need no consumer) is
// refused; the cluster then reloads with 1,000 and the next attempt fits.
func TestNATSSubscribeAgain(t *testing.T) {
	cl := synctest.StartNATSClusterT(t, "max_ack_pending: 40000")
	db := storetest.Open(t)
	c, err := lpsync.New(lpsync.Options{
		Brokers: cl.MQTTURLs()[:1], DeviceID: device, Store: db.Store,
		Verifier:   &command.Verifier{Keys: map[string]ed25519.PublicKey{"platform-2026": newKeys(t).pub}, Device: device},
		Handler:    &handler{db: db},
		Status:     func() lpsync.Status { return lpsync.Status{Version: "test"} },
		BackoffMin: 100 * time.Millisecond, BackoffMax: 500 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// A node handles one client's packets in order, and the client sends
	// its status after its SUBSCRIBE: once the status is here, the SUBACK
	// with its refusals has gone out.
	// The watcher takes the status at QoS 0, so that it needs no consumer
	// of its own under the limit.
	got := make(chan struct{}, 1)
	w := paho.NewClient(paho.NewClientOptions().AddBroker(cl.MQTTURLs()[0]).SetClientID("platform").SetCleanSession(true))
	if tok := w.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("platform: connect: %v", tok.Error())
	}
	t.Cleanup(func() { w.Disconnect(100) })
	w.Subscribe("leadport/v1/dev/"+device+"/status", 0, func(paho.Client, paho.Message) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no status from the device")
	}
	// The device's consumers: one per QoS 1 subscription (its command
	// topics).
	consumers := func() int {
		n := 0
		for _, leaf := range []string{".cmd", ".policy"} {
			cs, err := cl.Consumers(context.Background(), leaf)
			if err != nil {
				t.Fatal(err)
			}
			n += cs.Consumers
		}
		return n
	}
	if n := consumers(); n != 1 {
		t.Fatalf("%d consumers for the device's subscriptions, want the 1 that fits", n)
	}
	if s := c.Stats(); !s.Connected || s.Subscribed {
		t.Fatalf("with two subscriptions refused: %+v, want connected and not subscribed", s)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	if err := cl.Reconfigure(rctx, "max_ack_pending: 1000"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the device subscribed on the same connection", func() bool { return c.Stats().Subscribed })
	if s := c.Stats(); s.Connects != 1 {
		t.Errorf("%d connections, want the first one still", s.Connects)
	}
	if n := consumers(); n != 2 {
		t.Errorf("%d consumers for the device's subscriptions, want 2 (its command topics)", n)
	}
}
