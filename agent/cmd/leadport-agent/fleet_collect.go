package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/store"
)

// fleet collect: the platform's reference consumer of the devices' records.
//
// The data flow, one message at a time:
//
//	broker --(QoS 1, session kept)--> paho's reader --> handler --> msgQueue (bounded)
//	  --> writer: parseBatch (fleet_collect_batch.go) --> daySink.append (fleet_collect_sink.go)
//	  --> daySink.sync (fsync the files, then the directories) --> msg.Ack() (PUBACK)
//
// A message is acknowledged only once the lines it became are on disk, so
// a collector that dies at any point loses nothing: the broker keeps what
// was not acknowledged in the collector's session (clean session false, a
// client id made from --group and --instance) and delivers it again when
// the same instance returns. What was written and not yet acknowledged
// comes again too: a duplicate, with the same record id.
//
// Instances share the load through MQTT shared subscriptions
// ($share/GROUP/P/dev/+/usage ...). docs/fleet.md, "fleet collect", has the
// layout, the guarantees and what each broker does.

// collectTypes are the record types a collector takes by default: every
// type a device uploads (store.Types).
func collectTypes() []string {
	var ts []string
	for _, t := range store.Types {
		ts = append(ts, t.String())
	}
	return ts
}

// collectReadyKey is the context key of a channel fleet collect closes once
// it is subscribed (tests wait on it rather than sleeping).
type collectReadyKey struct{}

// collectBeforeAckKey is the context key of a func(records int) that the
// writer calls once a round is durable and before it is acknowledged:
// tests hold it there to cut the connection with batches written and not
// acknowledged, which a timed cut cannot promise.
type collectBeforeAckKey struct{}

// collectSummary is what fleet collect prints when it stops.
type collectSummary struct {
	ClientID string `json:"client_id"`
	Out      string `json:"out"`
	// Batches and Records were written and acknowledged.
	Batches int            `json:"batches"`
	Records map[string]int `json:"records"`
	// Rejected messages went to DIR/rejected, acknowledged.
	Rejected int `json:"rejected"`
	// Redelivered counts messages the broker marked as sent before (DUP):
	// what a previous run, or connection, did not acknowledge.
	Redelivered int `json:"redelivered"`
	// RepairedBytes were cut from the ends of files a crash left with a
	// partial line.
	RepairedBytes int64   `json:"repaired_bytes,omitempty"`
	Seconds       float64 `json:"seconds"`
	Error         string  `json:"error,omitempty"`
}

func fleetCollect(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal stops it cleanly; a second one, should the
	// shutdown hang, kills it.
	context.AfterFunc(ctx, stop)
	return collect(ctx, args, stdout, stderr)
}

// collect runs fleet collect until ctx ends or a write fails.
func collect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet collect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b brokerFlags
	b.add(fs)
	fs.Lookup("client-id").Usage = "client id; default: leadport-collect-GROUP-INSTANCE, which names the session the broker keeps"
	out := fs.String("out", "", "output directory: DIR/<type>/<YYYY-MM-DD>.jsonl; required")
	group := fs.String("group", "ingest", "shared-subscription group: instances in one group share the records ($share/GROUP/...); '' subscribes plainly (a single instance; brokers without $share, such as NATS)")
	host, _ := os.Hostname()
	instance := fs.String("instance", host, "this instance's name in its group (default: the host name); restart an instance under the same name, so it takes back what the broker kept for it")
	typeList := fs.String("types", strings.Join(collectTypes(), ","), "record types to collect, comma-separated")
	queueN := fs.Int("queue", 256, "messages taken from the broker and not yet written, at most")
	queueMB := fs.Int("queue-mb", 32, "their payloads together, at most, in MiB (a larger message goes alone)")
	probe := fs.Duration("share-probe", 5*time.Second, "before subscribing with a --group, check that the broker delivers through $share (NATS takes such a subscription and delivers nothing); 0 skips the check")
	leave := fs.Bool("leave", false, "take this instance out of its group for good: unsubscribe, write what its session still holds until none came for --settle, then end the session")
	settle := fs.Duration("settle", 2*time.Second, "with --leave: the session is drained once no message came for this long")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *out == "" {
		return errUsage
	}
	if strings.ContainsAny(*group, "/+#") {
		return fmt.Errorf("--group %q: a share name has no '/', '+' or '#'", *group)
	}
	if *instance == "" && b.clientID == "" {
		return errors.New("--instance is required (no host name to default to)")
	}
	if *queueN < 1 || *queueMB < 1 {
		return errors.New("--queue and --queue-mb must be at least 1")
	}
	types := map[string]bool{}
	for t := range strings.SplitSeq(*typeList, ",") {
		if _, err := store.ParseType(strings.TrimSpace(t)); err != nil {
			return fmt.Errorf("--types: %w", err)
		}
		types[strings.TrimSpace(t)] = true
	}
	clientID := b.clientID
	if clientID == "" {
		clientID = collectClientID(*group, *instance)
	}
	log := agent.NewLogger(stderr, config.Log{Level: "info"}).With("client_id", clientID)

	sink, err := openSink(*out, log)
	if err != nil {
		return err
	}
	start := time.Now()
	sum := collectSummary{ClientID: clientID, Out: *out, Records: map[string]int{}}
	for t := range types {
		sum.Records[t] = 0
	}

	if *group != "" && *probe > 0 && !*leave {
		if err := probeShare(ctx, &b, clientID, *group, *probe); err != nil {
			sink.close()
			return err
		}
	}

	q := newMsgQueue(*queueN, *queueMB<<20)
	stopQueue := context.AfterFunc(ctx, q.close)
	defer stopQueue()
	w := &collectWriter{prefix: b.prefix, types: types, sink: sink, log: log, sum: &sum}
	w.beforeAck, _ = ctx.Value(collectBeforeAckKey{}).(func(records int))
	written := make(chan error, 1)
	go func() { written <- w.run(q) }()

	filters := map[string]byte{}
	for t := range types {
		f := b.prefix + "/dev/+/" + t
		if *group != "" {
			f = "$share/" + *group + "/" + f
		}
		filters[f] = 1
	}
	arrived := make(chan struct{}, 1) // for --leave: something came
	handler := func(_ mqtt.Client, m mqtt.Message) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		// Blocks while the queue is full: paho reads no further, and the
		// broker holds the rest. False once stopping: the message stays
		// unacknowledged, and the broker delivers it to this session again.
		q.put(m)
	}
	var connections atomic.Int64
	c, err := b.connectWith(func(o *mqtt.ClientOptions) {
		o.SetClientID(clientID).
			SetProtocolVersion(4).
			SetCleanSession(false).
			SetAutoAckDisabled(true).
			// In order, one at a time, into the bounded queue: the order
			// of the PUBACKs is the order of the messages (MQTT-4.6.0-2).
			SetOrderMatters(true).
			// A restarted instance's session hands over what it holds
			// right after CONNACK, before the subscriptions give paho its
			// routes.
			SetDefaultPublishHandler(handler).
			SetAutoReconnect(true).
			SetMaxReconnectInterval(30 * time.Second).
			SetKeepAlive(30 * time.Second).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) {
				log.Warn("fleet collect: connection lost; reconnecting (what was not acknowledged comes again)", "err", err)
			}).
			SetOnConnectHandler(func(c mqtt.Client) {
				if connections.Add(1) == 1 || *leave {
					return // the first connection subscribes below
				}
				// The session keeps the subscriptions; a broker that lost
				// it (restarted without persistence) needs them again.
				resubscribe(ctx, c, filters, handler, log)
			})
	})
	if err != nil {
		q.close()
		<-written
		sink.close()
		return err
	}
	if *leave {
		if err := leaveGroup(ctx, c, filters, arrived, *settle); err != nil {
			q.close()
			<-written
			c.Disconnect(250)
			sink.close()
			return err
		}
		log.Info("fleet collect: drained this instance's session; leaving the group")
		q.close()
	} else {
		if err := subscribe(c, filters, handler); err != nil {
			q.close()
			<-written
			c.Disconnect(250)
			sink.close()
			return err
		}
		log.Info("fleet collect: collecting", "broker", b.broker, "filters", slices.Sorted(maps.Keys(filters)), "out", *out)
		if r, ok := ctx.Value(collectReadyKey{}).(chan struct{}); ok {
			close(r)
		}
	}

	var werr error
	select {
	case <-ctx.Done():
		// Stop taking (the queue's AfterFunc closed it); the writer
		// writes, syncs and acknowledges what is queued, then returns.
		werr = <-written
	case werr = <-written:
		q.close()
	}
	// Time for the last acknowledgements to leave before DISCONNECT.
	c.Disconnect(1000)
	if *leave && werr == nil && ctx.Err() == nil {
		// Everything it held is written and acknowledged: end the session
		// (a clean-session connection discards it).
		end, err := b.connectWith(func(o *mqtt.ClientOptions) {
			o.SetClientID(clientID).SetProtocolVersion(4).SetCleanSession(true)
		})
		if err != nil {
			werr = fmt.Errorf("end the session: %w", err)
		} else {
			end.Disconnect(250)
		}
	}
	if err := sink.close(); err != nil && werr == nil {
		werr = err
	}
	sum.RepairedBytes = sink.repaired
	sum.Seconds = time.Since(start).Seconds()
	if werr != nil {
		sum.Error = werr.Error()
	}
	if err := printCollectSummary(stdout, sum, *asJSON); err != nil && werr == nil {
		werr = err
	}
	return werr
}

// collectClientID is the client id of an instance: stable across restarts
// so the broker gives it back its session, and a valid NATS name (no '.',
// no space, '*' or '>').
func collectClientID(group, instance string) string {
	id := "leadport-collect-"
	if group != "" {
		id += group + "-"
	}
	id += instance
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, id)
}

// subscribe subscribes to filters at QoS 1 and fails if the broker refused
// any (SUBACK 0x80).
func subscribe(c mqtt.Client, filters map[string]byte, handler mqtt.MessageHandler) error {
	t := c.SubscribeMultiple(filters, handler)
	if !t.WaitTimeout(30 * time.Second) {
		return errors.New("subscribe: no SUBACK within 30 s")
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for f, code := range t.(*mqtt.SubscribeToken).Result() {
		if code == 0x80 {
			return fmt.Errorf("subscribe: the broker refused %s", f)
		}
	}
	return nil
}

// resubscribe subscribes again after a reconnection, retrying with backoff
// while the connection is up.
func resubscribe(ctx context.Context, c mqtt.Client, filters map[string]byte, handler mqtt.MessageHandler, log *slog.Logger) {
	wait := time.Second
	for ctx.Err() == nil && c.IsConnectionOpen() {
		err := subscribe(c, filters, handler)
		if err == nil {
			log.Info("fleet collect: reconnected and subscribed")
			return
		}
		log.Warn("fleet collect: subscribing again after a reconnection failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// leaveGroup takes the instance out of its group: UNSUBSCRIBE, so that the
// broker chooses it no more, then wait until what its session held has
// come (nothing for settle).
func leaveGroup(ctx context.Context, c mqtt.Client, filters map[string]byte, arrived <-chan struct{}, settle time.Duration) error {
	t := c.Unsubscribe(slices.Sorted(maps.Keys(filters))...)
	if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
		return fmt.Errorf("unsubscribe: %v", t.Error())
	}
	quiet := time.NewTimer(settle)
	defer quiet.Stop()
	for {
		select {
		case <-arrived:
			quiet.Reset(settle)
		case <-quiet.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// probeShare checks, on a connection of its own (no session, so nothing
// queued for the collector stands in front of the probe), that the broker
// delivers a message through a $share subscription. nats-server accepts a
// SUBSCRIBE to $share/... (SUBACK QoS 1) and delivers nothing through it:
// a collector would run, acknowledged by no one, while the devices' records
// went to no subscriber.
func probeShare(ctx context.Context, b *brokerFlags, clientID, group string, within time.Duration) error {
	topic := b.prefix + "/collect/probe/" + clientID
	got := make(chan struct{}, 1)
	c, err := b.connectWith(func(o *mqtt.ClientOptions) {
		o.SetClientID(clientID + "-probe").SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false)
	})
	if err != nil {
		return fmt.Errorf("share probe: %w", err)
	}
	defer c.Disconnect(250)
	err = subscribe(c, map[string]byte{"$share/" + group + "/" + topic: 0}, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("share probe: %w", err)
	}
	if t := c.Publish(topic, 1, false, "probe"); !t.WaitTimeout(20*time.Second) || t.Error() != nil {
		return fmt.Errorf("share probe: publish to %s: %v", topic, t.Error())
	}
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-got:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
	}
	return fmt.Errorf("the broker took a shared subscription ($share/%s/%s) but delivered nothing through it within %s: "+
		"it does not implement $share (nats-server does not, 2.9 to 2.14 at least), or an ACL refused the probe on %s. "+
		"Without $share, run a single instance with --group '' (or one per record type with --types); "+
		"if an ACL is the reason, --share-probe 0 skips this check", group, topic, within, topic)
}

// msgQueue is the bounded queue between paho's reader and the writer: at
// most maxN messages and maxBytes of payload (a larger message waits for
// the queue to empty and goes alone).
type msgQueue struct {
	maxN, maxBytes int

	// mu guards the fields that follow; cond signals every change.
	mu     gosync.Mutex
	cond   *gosync.Cond
	items  []mqtt.Message
	bytes  int
	closed bool
}

func newMsgQueue(maxN, maxBytes int) *msgQueue {
	q := &msgQueue{maxN: maxN, maxBytes: maxBytes}
	q.cond = gosync.NewCond(&q.mu)
	return q
}

// put queues m, waiting for room; false once the queue is closed.
func (q *msgQueue) put(m mqtt.Message) bool {
	n := len(m.Payload())
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.closed && len(q.items) > 0 && (len(q.items) >= q.maxN || q.bytes+n > q.maxBytes) {
		q.cond.Wait()
	}
	if q.closed {
		return false
	}
	q.items = append(q.items, m)
	q.bytes += n
	q.cond.Broadcast()
	return true
}

// take waits for a message and returns it with those queued behind it, up
// to maxN and maxBytes (at least one); nil once the queue is closed and
// empty.
func (q *msgQueue) take(maxN, maxBytes int) []mqtt.Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	n, size := 0, 0
	for n < len(q.items) && n < maxN && (n == 0 || size+len(q.items[n].Payload()) <= maxBytes) {
		size += len(q.items[n].Payload())
		n++
	}
	if n == 0 {
		return nil
	}
	out := slices.Clone(q.items[:n])
	q.items = slices.Delete(q.items, 0, n)
	q.bytes -= size
	q.cond.Broadcast()
	return out
}

// close stops put; take drains what is queued.
func (q *msgQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// collectWriter turns queued messages into durable lines, then
// acknowledges them. Its fields are its own (one goroutine).
type collectWriter struct {
	prefix string
	types  map[string]bool
	sink   *daySink
	log    *slog.Logger
	sum    *collectSummary
	now    func() time.Time
	// beforeAck, when set (tests), is told how many records a durable
	// round holds before the round is acknowledged.
	beforeAck func(records int)
}

// writeGroup bounds what one fsync round covers.
const (
	writeGroupN     = 256
	writeGroupBytes = 8 << 20
)

// run writes until the queue is closed and drained, or a write fails: then
// nothing of the failed round is acknowledged (the broker keeps it), and
// the collector stops, since after a failed fsync the state of the file is
// not known.
func (w *collectWriter) run(q *msgQueue) error {
	now := w.now
	if now == nil {
		now = time.Now
	}
	for {
		msgs := q.take(writeGroupN, writeGroupBytes)
		if msgs == nil {
			return nil
		}
		at := now().UTC()
		day := at.Format(time.DateOnly)
		bufs := map[string][]byte{}
		var batches, rejects, dups int
		records := map[string]int{}
		for _, m := range msgs {
			if m.Duplicate() {
				dups++
			}
			p, err := parseBatch(w.prefix, m.Topic(), m.Payload(), at, w.types)
			if err != nil {
				w.log.Warn("fleet collect: not a batch; kept in rejected/ and acknowledged", "topic", m.Topic(),
					"bytes", len(m.Payload()), "reason", err)
				bufs["rejected"] = append(bufs["rejected"], rejected(w.prefix, m.Topic(), m.Payload(), at, err)...)
				rejects++
				continue
			}
			bufs[p.typ] = append(bufs[p.typ], p.lines...)
			batches++
			records[p.typ] += p.records
		}
		for _, kind := range slices.Sorted(maps.Keys(bufs)) {
			if err := w.sink.append(kind, day, bufs[kind]); err != nil {
				return fmt.Errorf("write: %w (nothing of it acknowledged; the broker keeps it)", err)
			}
		}
		if err := w.sink.sync(); err != nil {
			return fmt.Errorf("%w (nothing of it acknowledged; the broker keeps it)", err)
		}
		if w.beforeAck != nil {
			n := 0
			for _, c := range records {
				n += c
			}
			w.beforeAck(n)
		}
		for _, m := range msgs {
			m.Ack()
		}
		w.sum.Batches += batches
		w.sum.Rejected += rejects
		w.sum.Redelivered += dups
		for t, n := range records {
			w.sum.Records[t] += n
		}
		w.sink.closeBefore(day)
	}
}

func printCollectSummary(w io.Writer, s collectSummary, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(s)
	}
	total := 0
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(s.Records)) {
		total += s.Records[t]
		parts = append(parts, fmt.Sprintf("%s %d", t, s.Records[t]))
	}
	_, err := fmt.Fprintf(w, "fleet collect %s: %d batches, %d records (%s), %d rejected, %d redelivered, %.1f s, into %s\n",
		s.ClientID, s.Batches, total, strings.Join(parts, ", "), s.Rejected, s.Redelivered, s.Seconds, s.Out)
	return err
}
