package sync_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	gosync "sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store/storetest"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

var quiet = slog.New(slog.NewTextHandler(logOut(), nil))

func logOut() io.Writer {
	if os.Getenv("SYNC_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

const device = "pbx-0042"

// platform publishes commands, as the platform would.
type platform struct {
	t   testing.TB
	cli paho.Client
}

func newPlatform(t testing.TB, b *synctest.Broker) *platform {
	p := &platform{t: t}
	opts := paho.NewClientOptions().AddBroker(b.URL()).SetClientID(fmt.Sprintf("platform-%d", time.Now().UnixNano())).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond)
	p.cli = paho.NewClient(opts)
	if tok := p.cli.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("platform client: %v", tok.Error())
	}
	t.Cleanup(func() { p.cli.Disconnect(100) })
	return p
}

func (p *platform) publish(topic string, payload []byte, retained bool) {
	if tok := p.cli.Publish(topic, 1, retained, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		p.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// handler is what the agent would do with a command, on a real store.
type handler struct {
	db      *storetest.DB
	mu      gosync.Mutex
	done    []string
	version int64
}

func (h *handler) Execute(_ context.Context, c *command.Command) lpsync.Outcome {
	h.mu.Lock()
	h.done = append(h.done, c.ID)
	h.mu.Unlock()
	switch c.Type {
	case command.TypeErase:
		a := c.Erase()
		if a.All {
			res, err := h.db.EraseAll()
			if err != nil {
				return lpsync.Outcome{Status: "failed", Reason: err.Error()}
			}
			b, _ := json.Marshal(res)
			return lpsync.Outcome{Status: "done", Result: b}
		}
		res, err := h.db.EraseSubject(a.Subject)
		if err != nil {
			return lpsync.Outcome{Status: "failed", Reason: err.Error()}
		}
		b, _ := json.Marshal(res)
		return lpsync.Outcome{Status: "done", Result: b}
	case command.TypePolicy:
		var p struct{ Version int64 }
		json.Unmarshal(c.Args, &p)
		h.mu.Lock()
		h.version = p.Version
		h.mu.Unlock()
	}
	return lpsync.Outcome{Status: "done"}
}

func (h *handler) PolicyVersion() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.version
}

func (h *handler) executed() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.done...)
}

type keys struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newKeys(t testing.TB) keys {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keys{pub, priv}
}

// runClient starts a sync client on db against the brokers; it stops at
// cleanup.
func runClient(t testing.TB, db *storetest.DB, k keys, h lpsync.Handler, brokers ...string) *lpsync.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, done := newClient(t, ctx, db, k, h, brokers...)
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("sync client did not stop within 10 s")
		}
	})
	return c
}

// runClientCtx runs a client until ctx ends; the channel closes when it
// has stopped.
func runClientCtx(t testing.TB, ctx context.Context, db *storetest.DB, k keys, h lpsync.Handler, brokers ...string) <-chan struct{} {
	t.Helper()
	_, done := newClient(t, ctx, db, k, h, brokers...)
	return done
}

// smallBatches, set by a test, makes the drain proceed in small steps.
var smallBatches bool

// barrierTimeout, set by a test, replaces the client's default
// BarrierTimeout (5 s).
var barrierTimeout time.Duration

func newClient(t testing.TB, ctx context.Context, db *storetest.DB, k keys, h lpsync.Handler, brokers ...string) (*lpsync.Client, <-chan struct{}) {
	t.Helper()
	o := lpsync.Options{
		Brokers: brokers, DeviceID: device, Store: db.Store,
		Verifier:   &command.Verifier{Keys: map[string]ed25519.PublicKey{"platform-2026": k.pub}, Device: device},
		Handler:    h,
		Status:     func() lpsync.Status { return lpsync.Status{Version: "test"} },
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		AckTimeout: 5 * time.Second, Idle: 50 * time.Millisecond,
		Logger: quiet,
	}
	if smallBatches {
		o.BatchBytes, o.MaxInFlight = 8<<10, 1
	}
	o.BarrierTimeout = barrierTimeout
	c, err := lpsync.New(o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	if b := brokerUp(brokers); b {
		// Commands published before the client subscribed would have no
		// one to go to (a new session).
		waitFor(t, 10*time.Second, "the client subscribed", func() bool { return c.Stats().Subscribed })
	}
	return c, done
}

// brokerUp reports whether the last broker answers (tests that start a
// client with the broker down do not wait for its subscriptions).
func brokerUp(brokers []string) bool {
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(brokers[len(brokers)-1], "tcp://"), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// fill appends n usage records (some with subject) in commits of 1,000.
func fill(t testing.TB, db *storetest.DB, n int, remote func(i int) string) []string {
	t.Helper()
	return storetest.FillUsage(t, db.Store, n, remote)
}

func remoteN(i int) string { return fmt.Sprintf("+1212555%04d", i%10000) }

func pending(t testing.TB, db *storetest.DB) int { return db.Backlog(t) }

func drainSize() int {
	if testing.Short() {
		return 20_000
	}
	return 100_000
}

// TestDrain: a backlog of 100,000 records reaches the platform, each
// record at least once and in the order written, and leaves the outbox.
func TestDrain(t *testing.T) {
	b := synctest.StartBroker(t)
	p := b.Got
	db := storetest.Open(t)
	n := drainSize()
	ids := fill(t, db, n, remoteN)
	runClient(t, db, newKeys(t), &handler{db: db}, b.URL())
	waitFor(t, 2*time.Minute, "every record at the platform and out of the outbox", func() bool {
		return p.Received() == n && pending(t, db) == 0
	})
	p.Mu.Lock()
	defer p.Mu.Unlock()
	for i, id := range p.Seq["usage"] {
		if id != ids[i] {
			t.Fatalf("record %d arrived as %s, written as %s: out of order", i, id, ids[i])
		}
	}
}

// TestDrainAcrossBrokerRestarts stops and restarts the broker several
// times in the middle of a drain (losing its sessions, as a crash would):
// every record arrives at least once, and the outbox ends empty. Each stop
// must find part of the backlog still missing at the broker, and each run
// of the broker must cost the client one connection: otherwise the
// restarts came after the drain, or the client never noticed them.
func TestDrainAcrossBrokerRestarts(t *testing.T) {
	b := synctest.StartBroker(t)
	p := b.Got
	db := storetest.Open(t)
	n := drainSize()
	ids := fill(t, db, n, remoteN)
	c := runClient(t, db, newKeys(t), &handler{db: db}, b.URL())
	const restarts = 4
	for round := 1; round <= restarts; round++ {
		// Stop only once the client is connected to this run of the broker
		// and has brought it records it did not have: a restart while the
		// client was still away would interrupt nothing.
		target, before := n*round/6, p.Received()
		waitFor(t, time.Minute, fmt.Sprintf("connection %d and %d records before restart %d", round, target, round), func() bool {
			got := p.Received()
			return c.Stats().Connects == uint64(round) && got >= target && got > before
		})
		b.Stop()
		// Nothing reaches a stopped broker: this is what it had.
		if got := p.Received(); got >= n {
			t.Fatalf("restart %d came after the drain: the broker had all %d records", round, got)
		}
		b.Start()
	}
	waitFor(t, 2*time.Minute, "every record after the restarts", func() bool {
		return p.Received() == n && pending(t, db) == 0
	})
	if got := c.Stats().Connects; got != restarts+1 {
		t.Errorf("the client connected %d times, want %d (once per run of the broker)", got, restarts+1)
	}
	t.Logf("%d records, %d duplicates across %d broker restarts", n, p.Duplicates(ids), restarts)
}

// TestFailover: the first broker is down; the client uses the second.
func TestFailover(t *testing.T) {
	down := synctest.FreeAddr(t)
	b := synctest.StartBroker(t)
	p := b.Got
	db := storetest.Open(t)
	fill(t, db, 10, remoteN)
	c := runClient(t, db, newKeys(t), &handler{db: db}, "tcp://"+down, b.URL())
	waitFor(t, 30*time.Second, "records through the second broker", func() bool { return p.Received() == 10 })
	// The broker has them before its PUBACK reaches the client.
	waitFor(t, 10*time.Second, "the records acknowledged", func() bool { return c.Stats().Records == 10 })
	if s := c.Stats(); !s.Connected || !strings.Contains(s.Broker, b.URL()[len("tcp://"):]) {
		t.Errorf("stats = %+v, want connected to the second broker", s)
	}
}

// TestNoBroker: with the broker away records wait in the store, and go
// once it is there.
func TestNoBroker(t *testing.T) {
	b := synctest.StartBroker(t)
	b.Stop()
	db := storetest.Open(t)
	fill(t, db, 50, remoteN)
	c := runClient(t, db, newKeys(t), &handler{db: db}, b.URL())
	waitFor(t, 10*time.Second, "a failed connection attempt", func() bool { return c.Stats().LastError != "" })
	if got := pending(t, db); got != 50 {
		t.Fatalf("%d records pending with no broker, want 50", got)
	}
	b.Start()
	p := b.Got
	waitFor(t, 30*time.Second, "records once the broker is back", func() bool { return p.Received() == 50 && pending(t, db) == 0 })
}
