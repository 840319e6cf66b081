package main

import (
	"encoding/json"
	"fmt"
	"strings"
	gosync "sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// platform is the platform's side in the simulation: one MQTT client with
// a persistent session (so the broker keeps what it could not deliver
// while a node was down) that takes every batch and receipt and counts
// records by id, and publishes signed commands.
type platform struct {
	cli    paho.Client
	prefix string

	mu        gosync.Mutex      // guards the fields that follow
	got       map[string]uint16 // record id -> copies received
	messages  uint64
	receipts  map[string]map[string]bool // command id -> devices that answered
	badBatch  uint64
	perDevice map[string]time.Time // device -> last batch received
}

func newPlatform(brokers []string, prefix string) (*platform, error) {
	p := &platform{prefix: prefix, got: map[string]uint16{}, receipts: map[string]map[string]bool{}, perDevice: map[string]time.Time{}}
	opts := paho.NewClientOptions().SetClientID("fleet-sim-platform").SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetResumeSubs(true).SetOrderMatters(false).
		SetKeepAlive(10 * time.Second)
	for _, b := range brokers {
		opts.AddBroker(b)
	}
	// Subscribing again on each connection: a broker that lost the
	// session (a node restarted without its store) still sends us all.
	opts.SetOnConnectHandler(func(c paho.Client) {
		c.SubscribeMultiple(map[string]byte{
			prefix + "/dev/+/usage": 1, prefix + "/dev/+/violation": 1, prefix + "/dev/+/receipt": 1,
		}, p.onMessage)
	})
	p.cli = paho.NewClient(opts)
	if t := p.cli.Connect(); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("platform: connect: %v", t.Error())
	}
	return p, nil
}

func (p *platform) onMessage(_ paho.Client, m paho.Message) {
	var b struct {
		Device  string `json:"device"`
		Records []struct {
			ID        string `json:"id"`
			Type      string `json:"type"`
			CommandID string `json:"command_id"`
		} `json:"records"`
	}
	err := json.Unmarshal(m.Payload(), &b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.messages++
	if err != nil {
		p.badBatch++
		return
	}
	p.perDevice[b.Device] = time.Now()
	for _, r := range b.Records {
		if p.got[r.ID] < 1<<16-1 {
			p.got[r.ID]++
		}
		if r.Type == "receipt" && strings.HasSuffix(m.Topic(), "/receipt") {
			if p.receipts[r.CommandID] == nil {
				p.receipts[r.CommandID] = map[string]bool{}
			}
			p.receipts[r.CommandID][b.Device] = true
		}
	}
}

// counts returns the distinct records and the copies received.
func (p *platform) counts() (distinct, copies int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.got {
		copies += int(n)
	}
	return len(p.got), copies
}

// answered is how many devices sent a receipt for the command.
func (p *platform) answered(commandID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.receipts[commandID])
}

// missing returns how many of ids never arrived.
func (p *platform) missing(ids []string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, id := range ids {
		if p.got[id] == 0 {
			n++
		}
	}
	return n
}

func (p *platform) publish(topic string, payload []byte) error {
	t := p.cli.Publish(topic, 1, false, payload)
	if !t.WaitTimeout(30 * time.Second) {
		return fmt.Errorf("platform: publish %s: no PUBACK in 30 s", topic)
	}
	return t.Error()
}
