// Package synctest runs a real MQTT broker (mochi-mqtt) in a test
// process, on a loopback port that survives restarts, and collects every
// batch a device publishes to it, by record id.
package synctest

import (
	"encoding/json"
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
	b := &Broker{t: t, addr: FreeAddr(t), Got: NewCollector(t)}
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
	if err := srv.AddHook(&tap{c: b.Got}, nil); err != nil {
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

// tap is a broker hook that hands every publish to the collector.
type tap struct {
	mochi.HookBase
	c *Collector
}

func (h *tap) ID() string           { return "tap" }
func (h *tap) Provides(b byte) bool { return b == mochi.OnPublish }
func (h *tap) OnPublish(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	h.c.Add(pk.TopicName, pk.Payload)
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
