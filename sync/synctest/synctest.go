// Package synctest runs a real MQTT broker (mochi-mqtt) in a test
// process, on a loopback port that survives restarts, and collects every
// batch a device publishes to it, by record id. It can also drop a
// client's connection, stall a topic, and tell which messages a client
// acknowledged: what a test needs to show that a reconnect happened and
// what the device did with a message it got again.
package synctest

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	gosync "sync"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Broker is a real MQTT broker (mochi-mqtt) in the test process, on a
// loopback port that survives restarts.
type Broker struct {
	t    testing.TB
	addr string
	srv  *mochi.Server
	// Got is every batch the broker took from the device (before its
	// PUBACK), across restarts: what the agent answers for.
	Got *Collector

	// mu guards the fields that follow; they outlive restarts.
	mu gosync.Mutex
	// stalled is a topic whose publishes the broker drops without a
	// PUBACK (Stall).
	stalled string
	// unacked holds, per client id and packet id, the QoS 1 messages sent
	// to the client and not yet acknowledged; acked, per client id, those
	// it acknowledged, in order (Acked).
	unacked map[string]map[uint16]Message
	acked   map[string][]Message
	// early holds, per client id, the packet ids of PUBACKs read before
	// the hook noted the message sent: mochi calls OnPacketSent after the
	// write, and a fast client can answer before it runs.
	early map[string]map[uint16]bool
	// sent0 holds, per client id, the QoS 0 messages written to it
	// (Delivered).
	sent0 map[string][]Message
}

// Message is a message the broker sent to a client.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool // sent because it was retained (on a subscription)
}

// FreeAddr is a loopback host:port nothing listens on.
func FreeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// StartBroker starts a broker that stops at the test's cleanup.
func StartBroker(t testing.TB) *Broker {
	b := &Broker{t: t, addr: FreeAddr(t), Got: NewCollector(t),
		unacked: map[string]map[uint16]Message{}, acked: map[string][]Message{}, early: map[string]map[uint16]bool{},
		sent0: map[string][]Message{}}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Start starts it (again) on its address.
func (b *Broker) Start() {
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: quiet})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		b.t.Fatal(err)
	}
	if err := srv.AddHook(&tap{b: b}, nil); err != nil {
		b.t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: b.addr})); err != nil {
		b.t.Fatal(err)
	}
	go srv.Serve()
	b.srv = srv
}

// Stop stops it, dropping its sessions, as a crash would.
func (b *Broker) Stop() {
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
	}
}

// URL is its tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.addr }

// Kick closes a client's connection from the broker's side, as a network
// failure would, and keeps its session and the retained messages: the
// client comes back to the same broker state.
func (b *Broker) Kick(clientID string) {
	b.t.Helper()
	cl, ok := b.srv.Clients.Get(clientID)
	if !ok || cl.Closed() {
		b.t.Fatalf("kick %s: not connected", clientID)
	}
	cl.Stop(errors.New("kicked by the test"))
}

// Stall makes the broker drop every publish on topic without a PUBACK
// (and without passing it on, or to Got), as a broker whose storage hangs
// would; the publisher's messages stay unacknowledged. Stall("") ends it;
// messages dropped before are only taken when sent again.
func (b *Broker) Stall(topic string) {
	b.mu.Lock()
	b.stalled = topic
	b.mu.Unlock()
}

// Acked returns the messages on topic that the client acknowledged
// (PUBACK), in order, across its connections: a message delivered again
// on a reconnect and dealt with counts twice.
func (b *Broker) Acked(clientID, topic string) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Message
	for _, m := range b.acked[clientID] {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// Sent0 returns the messages on topic the broker wrote to the client at
// QoS 0 (no acknowledgement to wait for), in order, across its
// connections.
func (b *Broker) Sent0(clientID, topic string) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Message
	for _, m := range b.sent0[clientID] {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// collector keeps what the device published, by record id.
type Collector struct {
	t   testing.TB
	Mu  gosync.Mutex
	IDs map[string]int      // record id -> times received
	Seq map[string][]string // type -> ids in order of first arrival
	Msg map[string][][]byte // topic -> payloads
	// Order is every payload in the order the broker took it.
	Order [][]byte
	Total int
}

// NewCollector makes an empty collector.
func NewCollector(t testing.TB) *Collector {
	return &Collector{t: t, IDs: map[string]int{}, Seq: map[string][]string{}, Msg: map[string][][]byte{}}
}

// tap is a broker hook that hands every publish to the collector (or
// drops it, on a stalled topic), and follows the messages sent to clients
// until they acknowledge them.
type tap struct {
	mochi.HookBase
	b *Broker
}

func (h *tap) ID() string { return "tap" }
func (h *tap) Provides(b byte) bool {
	return b == mochi.OnPublish || b == mochi.OnPacketSent || b == mochi.OnPacketRead
}

func (h *tap) OnPublish(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	h.b.mu.Lock()
	stalled := h.b.stalled != "" && pk.TopicName == h.b.stalled
	h.b.mu.Unlock()
	if stalled {
		// Dropped before the broker answers: no PUBACK, no subscriber.
		return pk, packets.ErrRejectPacket
	}
	h.b.Got.Add(pk.TopicName, pk.Payload)
	return pk, nil
}

// OnPacketSent notes a QoS 1 message written to a client (again, when the
// broker re-sends it on a resumed session: same packet id).
func (h *tap) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if pk.FixedHeader.Qos == 0 {
		h.b.sent0[cl.ID] = append(h.b.sent0[cl.ID], Message{Topic: pk.TopicName,
			Payload: append([]byte(nil), pk.Payload...), Retained: pk.FixedHeader.Retain})
		return
	}
	m := Message{Topic: pk.TopicName, Payload: append([]byte(nil), pk.Payload...), Retained: pk.FixedHeader.Retain}
	if h.b.early[cl.ID][pk.PacketID] {
		delete(h.b.early[cl.ID], pk.PacketID)
		h.b.acked[cl.ID] = append(h.b.acked[cl.ID], m)
		return
	}
	if h.b.unacked[cl.ID] == nil {
		h.b.unacked[cl.ID] = map[uint16]Message{}
	}
	h.b.unacked[cl.ID][pk.PacketID] = m
}

// OnPacketRead takes a client's PUBACK: the message with its packet id has
// been dealt with by the client. (The broker's own PUBACKs to a client's
// publishes are written, not read, so they do not come here.)
func (h *tap) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Puback {
		return pk, nil
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if m, ok := h.b.unacked[cl.ID][pk.PacketID]; ok {
		delete(h.b.unacked[cl.ID], pk.PacketID)
		h.b.acked[cl.ID] = append(h.b.acked[cl.ID], m)
	} else {
		// Its message is still being written: OnPacketSent takes it.
		if h.b.early[cl.ID] == nil {
			h.b.early[cl.ID] = map[uint16]bool{}
		}
		h.b.early[cl.ID][pk.PacketID] = true
	}
	return pk, nil
}

// Add notes a publish.
func (p *Collector) Add(topic string, payload []byte) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	cp := append([]byte(nil), payload...)
	p.Msg[topic] = append(p.Msg[topic], cp)
	p.Order = append(p.Order, cp)
	p.Total++
	var batch struct {
		V       int               `json:"v"`
		Device  string            `json:"device"`
		Batch   string            `json:"batch"`
		Records []json.RawMessage `json:"records"`
	}
	if json.Unmarshal(payload, &batch) != nil || batch.Batch == "" {
		return
	}
	for _, r := range batch.Records {
		var head struct{ ID, Type string }
		if err := json.Unmarshal(r, &head); err != nil {
			p.t.Errorf("record in batch %s: %v", batch.Batch, err)
			continue
		}
		if p.IDs[head.ID] == 0 {
			p.Seq[head.Type] = append(p.Seq[head.Type], head.ID)
		}
		p.IDs[head.ID]++
	}
}

// Duplicates fails the test if a record of ids never arrived, and returns
// how many extra copies of records arrived (delivery is at least once).
func (p *Collector) Duplicates(ids []string) int {
	p.t.Helper()
	p.Mu.Lock()
	defer p.Mu.Unlock()
	for _, id := range ids {
		if p.IDs[id] == 0 {
			p.t.Fatalf("record %s never reached the broker", id)
		}
	}
	dups := 0
	for _, c := range p.IDs {
		dups += c - 1
	}
	return dups
}

// Received is the number of distinct records taken.
func (p *Collector) Received() int {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	return len(p.IDs)
}
