package main

import (
	"encoding/json"
	"net"
	"strings"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// broker is an MQTT broker (mochi-mqtt) in the demo's process, on a free
// loopback port, open to anyone: it stands in for the Leadport platform's
// broker. It watches what the device publishes, as the platform would.
type broker struct {
	srv *mochi.Server
	url string

	mu       sync.Mutex
	records  map[string]map[string]bool // record type -> ids received (a record may come twice)
	receipts map[string]string          // command id -> receipt status
	status   map[string]any             // the device's last status document
}

func startBroker(device, prefix string) (*broker, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &broker{url: "tcp://" + l.Addr().String(), records: map[string]map[string]bool{}, receipts: map[string]string{}}
	b.srv = mochi.New(&mochi.Options{InlineClient: true, Logger: quiet})
	if err := b.srv.AddHook(new(auth.AllowHook), nil); err != nil {
		l.Close()
		return nil, err
	}
	if err := b.srv.AddListener(listeners.NewNet("demo", l)); err != nil {
		l.Close()
		return nil, err
	}
	if err := b.srv.Subscribe(prefix+"/dev/"+device+"/#", 1, b.onPublish); err != nil {
		b.srv.Close()
		return nil, err
	}
	go b.srv.Serve()
	return b, nil
}

func (b *broker) close() { b.srv.Close() }

// onPublish notes the device's records, receipts and status.
func (b *broker) onPublish(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
	leaf := pk.TopicName[strings.LastIndexByte(pk.TopicName, '/')+1:]
	b.mu.Lock()
	defer b.mu.Unlock()
	if leaf == "status" {
		var st map[string]any
		if json.Unmarshal(pk.Payload, &st) == nil {
			b.status = st
		}
		return
	}
	var batch struct {
		Records []struct {
			ID        string `json:"id"`
			Type      string `json:"type"`
			CommandID string `json:"command_id"`
			Status    string `json:"status"`
		} `json:"records"`
	}
	if json.Unmarshal(pk.Payload, &batch) != nil {
		return
	}
	for _, r := range batch.Records {
		if b.records[r.Type] == nil {
			b.records[r.Type] = map[string]bool{}
		}
		b.records[r.Type][r.ID] = true
		if r.Type == "receipt" {
			b.receipts[r.CommandID] = r.Status
		}
	}
}

// counts is the number of distinct records received, by type.
func (b *broker) counts() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := map[string]int{}
	for t, ids := range b.records {
		n[t] = len(ids)
	}
	return n
}

// receipt is the status of the receipt for command id, "" until one came.
func (b *broker) receipt(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.receipts[id]
}

// lastStatus is the device's last status document (nil before the first).
func (b *broker) lastStatus() map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}
