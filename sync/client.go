package sync

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/url"
	gosync "sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/sync/command"
)

// Options configure a Client.
type Options struct {
	// Brokers are tried in order at each connection attempt (failover).
	Brokers     []string
	TopicPrefix string
	DeviceID    string
	TLS         *tls.Config
	Username    string
	Password    string
	KeepAlive   time.Duration // default 30 s

	Store    *store.Store
	Verifier *command.Verifier
	Handler  Handler
	// Status returns the status document (docs/protocol.md, "Status"); the
	// client sets its state, device id and time. Called on each
	// connection, every StatusInterval and after RefreshStatus.
	Status         func() Status
	StatusInterval time.Duration // default 60 s
	// Identity returns the document naming the device's call-signing key
	// (docs/protocol.md, "Identity"), published retained with each
	// status; nil publishes none.
	Identity func() Identity

	// BatchBytes bounds a batch's JSON; default 256 KiB.
	BatchBytes int
	// MaxInFlight bounds the batches published and not yet acknowledged;
	// default 8.
	MaxInFlight int
	// AckTimeout is how long a batch may wait for its PUBACK before the
	// connection is taken as broken; default 30 s.
	AckTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between connection
	// attempts, which doubles with each failure, with full jitter.
	// Defaults 1 s and 2 min.
	BackoffMin, BackoffMax time.Duration
	// Idle is how often the outbox is looked at when it was empty;
	// default 500 ms. Wake looks at once.
	Idle time.Duration
	// BarrierTimeout bounds how long the upload waits, after each
	// connection, for the commands queued at the broker (barrier.go);
	// default 5 s.
	BarrierTimeout time.Duration

	Logger *slog.Logger
	Now    func() time.Time
}

// Handler carries out verified commands. The agent provides it, so that
// sync need not know the rules or the store's erase.
type Handler interface {
	// Execute carries out c and says what its receipt reports. It runs
	// while no batch is being built or published, so an erase is never
	// overtaken by records read before it.
	Execute(ctx context.Context, c *command.Command) Outcome
	// PolicyVersion is the version of the policy in force, which a
	// policy must exceed to be applied.
	PolicyVersion() int64
}

// Outcome is a command's receipt: status done, rejected or failed.
type Outcome struct {
	Status ReceiptStatus
	Reason string
	Result json.RawMessage
	// Subject makes Result personal data of that subject (an export).
	Subject string
}

// ReceiptStatus is a receipt's status (docs/protocol.md, "Commands").
type ReceiptStatus string

// The statuses of a receipt.
const (
	Done     ReceiptStatus = "done"     // carried out
	Rejected ReceiptStatus = "rejected" // not carried out: the reason says why
	Failed   ReceiptStatus = "failed"   // tried, and it did not work
)

// Stats are the client's counters and state, for the status and metrics.
type Stats struct {
	Connected   bool      `json:"connected"`
	Subscribed  bool      `json:"subscribed"` // to the command and policy topics, on this connection
	Broker      string    `json:"broker,omitempty"`
	Connects    uint64    `json:"connects"`
	LastConnect time.Time `json:"last_connect,omitzero"`
	LastSync    time.Time `json:"last_sync,omitzero"` // last batch acknowledged
	Batches     uint64    `json:"batches_acked"`
	Records     uint64    `json:"records_acked"`
	Commands    uint64    `json:"commands"`
	Rejected    uint64    `json:"commands_rejected"`
	// Unqueued counts command messages past the queue's bound, left
	// unacknowledged for the broker to deliver again (cmdQueue).
	Unqueued  uint64 `json:"commands_unqueued,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// Client syncs the store's outbox with the platform and takes its
// commands. The outbox in bbolt is the truth: a record leaves it only
// once the batch carrying it was acknowledged on a connection that stayed
// up until then (paho completes a publish token without error when the
// connection drops and it re-sends the message itself, its issue #563).
type Client struct {
	o   Options
	log *slog.Logger
	cli mqtt.Client

	// epoch counts connections; a batch counts as delivered only if its
	// PUBACK came in the epoch it was published in.
	epoch     atomic.Uint64
	mu        gosync.Mutex
	connected chan struct{} // closed while connected
	lost      chan struct{} // closed when the current connection is lost
	stats     Stats

	// gate: the uploader reads and publishes under the read lock; an
	// erase holds the write lock, so no record read before an erase is
	// published after it.
	gate    gosync.RWMutex
	erasing atomic.Int32 // erases waiting for the gate

	wake    chan struct{}
	refresh chan struct{}
	// policyFromDevice: the policy in force came to this device alone,
	// so a fleet policy of the same version does not replace it.
	policyFromDevice bool
	cmdMu            gosync.Mutex

	trying string // the broker of the current connection attempt

	// cmds holds messages from paho, in order, for commandWorker;
	// stopped closes when Run no longer takes them.
	cmds    cmdQueue
	stopped chan struct{}
	// barrier is the current connection's (mu); barrierSent is poked
	// when one is published.
	barrier     *barrierState
	barrierSent chan struct{}
}

var errLost = errors.New("connection lost before the batch was acknowledged")

// New prepares a client; Run connects.
func New(o Options) (*Client, error) {
	if len(o.Brokers) == 0 {
		return nil, errors.New("sync: no broker")
	}
	if o.DeviceID == "" || o.Store == nil || o.Verifier == nil || o.Handler == nil {
		return nil, errors.New("sync: DeviceID, Store, Verifier and Handler are required")
	}
	if o.TopicPrefix == "" {
		o.TopicPrefix = "leadport/v1"
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = time.Minute
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 256 << 10
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 8
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 2 * time.Minute
	}
	if o.Idle <= 0 {
		o.Idle = 500 * time.Millisecond
	}
	if o.BarrierTimeout <= 0 {
		o.BarrierTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Status == nil {
		o.Status = func() Status { return Status{} }
	}
	c := &Client{o: o, log: o.Logger, connected: make(chan struct{}), lost: make(chan struct{}),
		wake: make(chan struct{}, 1), refresh: make(chan struct{}, 1),
		cmds: cmdQueue{ready: make(chan struct{}, 1)}, stopped: make(chan struct{}), barrierSent: make(chan struct{}, 1)}
	close(c.lost)

	opts := mqtt.NewClientOptions()
	for _, b := range o.Brokers {
		opts.AddBroker(b)
	}
	offline, _ := json.Marshal(map[string]any{"state": "offline", "device_id": o.DeviceID})
	opts.SetClientID(o.DeviceID).
		// MQTT 3.1.1 only (PROTOCOL.md). Left to choose, paho answers a
		// refused CONNECT by trying MQTT 3.1 on the same broker before the
		// next: a second connection to a broker that is busy (a NATS node
		// in a connect storm), and the broker's reason (NATS refuses a
		// client id with a '.') lost behind the 3.1 attempt's EOF.
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetKeepAlive(o.KeepAlive).
		SetPingTimeout(10*time.Second).
		SetConnectTimeout(15*time.Second).
		SetWriteTimeout(15*time.Second).
		// Our loop reconnects, with jitter, and knows each connection's
		// epoch; paho's own would complete tokens behind our back.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		// In order, so a barrier follows the commands before it; onMessage
		// only queues, so paho's reader is never held up.
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		// A restarted agent's session hands over the commands queued
		// meanwhile right after CONNACK, before SubscribeMultiple has
		// given paho its routes; without a default handler paho drops
		// them unacknowledged, until the next connection.
		SetDefaultPublishHandler(c.onMessage).
		SetBinaryWill(c.topic("status"), offline, 1, true).
		SetConnectionLostHandler(c.onLost).
		// paho tries the brokers in order; the last one tried is the one
		// a successful connection is to.
		SetConnectionAttemptHandler(func(broker *url.URL, conf *tls.Config) *tls.Config {
			c.mu.Lock()
			c.trying = broker.Redacted()
			c.mu.Unlock()
			return conf
		})
	if o.TLS != nil {
		opts.SetTLSConfig(o.TLS)
	}
	if o.Username != "" {
		opts.SetUsername(o.Username)
		opts.SetPassword(o.Password)
	}
	c.cli = mqtt.NewClient(opts)
	return c, nil
}

func (c *Client) topic(leaf string) string {
	return c.o.TopicPrefix + "/dev/" + c.o.DeviceID + "/" + leaf
}

// Wake makes the uploader look at the outbox now (after an append).
func (c *Client) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// RefreshStatus publishes the status soon (after a change of state).
func (c *Client) RefreshStatus() {
	select {
	case c.refresh <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	c.mu.Unlock()
	c.cmds.mu.Lock()
	s.Unqueued = c.cmds.refused
	c.cmds.mu.Unlock()
	return s
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.stats.LastError = err.Error()
	c.mu.Unlock()
}

// Run connects and keeps the client connected, uploads and takes commands
// until ctx ends; then it publishes an offline status and disconnects.
func (c *Client) Run(ctx context.Context) error {
	var wg gosync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); c.uploader(ctx) }()
	go func() { defer wg.Done(); c.statusLoop(ctx) }()
	// The worker finishes the command at hand before Run goes on, so none
	// touches the store after Run returns.
	go func() { defer wg.Done(); c.commandWorker(ctx) }()
	c.connectLoop(ctx)
	wg.Wait()
	close(c.stopped)
	if c.cli.IsConnectionOpen() {
		doc, _ := json.Marshal(map[string]any{"state": "offline", "device_id": c.o.DeviceID, "at": c.o.Now().UTC()})
		if t := c.cli.Publish(c.topic("status"), 1, true, doc); !t.WaitTimeout(2 * time.Second) {
			c.log.Warn("offline status not acknowledged at shutdown")
		}
	}
	c.cli.Disconnect(500)
	return nil
}

func (c *Client) connectLoop(ctx context.Context) {
	backoff := c.o.BackoffMin
	for ctx.Err() == nil {
		// The channel onLost closes is made before the attempt, so a loss
		// right after connecting is not missed.
		lost := make(chan struct{})
		c.mu.Lock()
		c.lost = lost
		c.mu.Unlock()
		t := c.cli.Connect()
		var err error
		select {
		case <-t.Done():
			err = t.Error()
		case <-ctx.Done():
			return
		}
		if err != nil {
			c.setErr(err)
			// Full jitter, so a fleet that lost its broker does not come
			// back in step.
			wait := time.Duration(rand.Int64N(int64(backoff))) + c.o.BackoffMin/2
			c.log.Warn("broker not reachable", "err", err, "retry_in", wait.Round(time.Millisecond))
			backoff = min(backoff*2, c.o.BackoffMax)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = c.o.BackoffMin
		c.up(lost)
		select {
		case <-lost:
		case <-ctx.Done():
			return
		}
	}
}

// up starts the work of a connection once Connect has completed: not
// from paho's OnConnect handler, which runs while paho still re-sends the
// session's stored messages (setting their DUP flag as its writer sends
// them: paho issue #703), so a batch published then raced with it.
func (c *Client) up(lost chan struct{}) {
	epoch := c.epoch.Add(1)
	c.mu.Lock()
	select {
	case <-lost:
		c.mu.Unlock()
		return // lost again already
	default:
	}
	broker := c.trying
	select {
	case <-c.connected:
	default:
		close(c.connected)
	}
	c.stats.Connected, c.stats.Broker, c.stats.LastConnect = true, broker, c.o.Now()
	c.stats.Connects++
	c.mu.Unlock()
	c.log.Info("connected to the broker", "epoch", epoch)
	// Commands at QoS 1: the broker keeps those sent while the device is
	// away. The policies at QoS 0: they are retained, so the broker hands
	// the current one over at every subscribe and none is missed across a
	// connection lost; and on NATS every QoS 1 subscription is a JetStream
	// consumer replicated on the cluster, the cost that bounds a fleet
	// (docs/fleet.md), so two per device instead of four.
	filters := map[string]byte{
		c.topic("cmd"): 1, c.o.TopicPrefix + "/fleet/cmd": 1, c.topic("policy"): 0, c.o.TopicPrefix + "/fleet/policy": 0,
	}
	t := c.cli.SubscribeMultiple(filters, c.onMessage)
	go c.subscribed(epoch, lost, filters, t)
	c.RefreshStatus()
	c.Wake()
}

// subscribed waits for the SUBSCRIBE of the connection of epoch and, while
// the broker refuses or fails it and the connection lasts, sends it again
// with backoff: a NATS node answers 0x80 when it cannot make a
// subscription's JetStream consumer in time (in a connect storm, or while
// its cluster elects a leader after losing a node; docs/fleet.md), and
// without its subscriptions the device would take no command until its
// next connection.
func (c *Client) subscribed(epoch uint64, lost chan struct{}, filters map[string]byte, t mqtt.Token) {
	backoff := c.o.BackoffMin
	for {
		ok := t.WaitTimeout(30*time.Second) && t.Error() == nil
		if ok {
			for topic, granted := range t.(*mqtt.SubscribeToken).Result() {
				if granted > 1 {
					ok = false
					c.log.Error("subscription refused by the broker", "topic", topic, "code", granted)
				}
			}
		} else {
			c.log.Error("subscription failed", "err", t.Error())
		}
		c.mu.Lock()
		current := c.epoch.Load() == epoch
		if current {
			c.stats.Subscribed = ok
		}
		c.mu.Unlock()
		if ok {
			c.sendBarrier(epoch)
			return
		}
		if !current {
			return
		}
		wait := time.Duration(rand.Int64N(int64(backoff))) + c.o.BackoffMin/2
		backoff = min(backoff*2, c.o.BackoffMax)
		select {
		case <-time.After(wait):
		case <-lost:
			return
		case <-c.stopped:
			return
		}
		if c.epoch.Load() != epoch {
			return
		}
		c.log.Warn("subscribing again", "after", wait.Round(time.Millisecond))
		t = c.cli.SubscribeMultiple(filters, c.onMessage)
	}
}

func (c *Client) onLost(_ mqtt.Client, err error) {
	c.epoch.Add(1)
	c.mu.Lock()
	c.connected = make(chan struct{})
	select {
	case <-c.lost:
	default:
		close(c.lost)
	}
	c.stats.Connected, c.stats.Subscribed = false, false
	c.stats.LastError = err.Error()
	c.mu.Unlock()
	c.log.Warn("connection to the broker lost", "err", err)
}

// waitConnected returns the epoch of the connection, or false when ctx
// ended.
func (c *Client) waitConnected(ctx context.Context) (uint64, bool) {
	for {
		c.mu.Lock()
		ch := c.connected
		c.mu.Unlock()
		select {
		case <-ch:
			return c.epoch.Load(), true
		case <-ctx.Done():
			return 0, false
		}
	}
}

// statusLoop publishes the retained status on each connection, every
// interval and after RefreshStatus.
func (c *Client) statusLoop(ctx context.Context) {
	tick := time.NewTicker(c.o.StatusInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.refresh:
		}
		// Our own state, not paho's: its connection is open while it still
		// re-sends the session's messages (see up).
		if !c.Stats().Connected {
			continue
		}
		doc := c.o.Status()
		doc.State, doc.DeviceID, doc.At = "online", c.o.DeviceID, c.o.Now().UTC()
		b, err := json.Marshal(doc)
		if err != nil {
			c.log.Error("status not encoded", "err", err)
			continue
		}
		c.cli.Publish(c.topic("status"), 1, true, b)
		if c.o.Identity != nil {
			if b, err := json.Marshal(c.o.Identity()); err != nil {
				c.log.Error("identity not encoded", "err", err)
			} else {
				c.cli.Publish(c.topic("identity"), 1, true, b)
			}
		}
	}
}
