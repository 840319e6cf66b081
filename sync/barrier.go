package sync

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"strings"
	gosync "sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/oklog/ulid/v2"
)

// Commands first on (re)connect.
//
// The broker keeps the device's session while it is away and queues the
// commands sent meanwhile. On reconnecting, the device must carry those out
// before it uploads its backlog: an erase queued while the device was
// offline must not find the subject's records already delivered. Queued
// messages arrive on their own, in no announced number, so the device
// sends itself a barrier: after subscribing it publishes a barrier message
// (QoS 1) to its own command topic, P/dev/D/cmd. The broker delivers the
// messages of one subscription in order, so everything queued on that topic
// before the barrier arrives first; commands are carried out one at a time,
// in the order they arrive (commandWorker), so by the time the barrier is
// taken every command before it is done. The uploader waits for it, at most
// BarrierTimeout, then uploads anyway and says so in the log (a broker that
// drops the barrier, such as one whose ACL refuses the device its own
// command topic, must not stop the upload for good).
//
// The barrier goes to the command topic itself, not a topic of its own:
// NATS serves each MQTT subscription from its own JetStream consumer, so
// order holds only within one subscription. Commands on P/fleet/cmd are
// ordered before the barrier on brokers that keep one queue per session
// (mosquitto, mochi-mqtt) but not on NATS.

// barrierMsg is the barrier's payload: never a JWS (a command is one), so
// the command path tells them apart by the first byte.
type barrierMsg struct {
	Barrier string `json:"barrier"`
	Device  string `json:"device"`
}

func isBarrier(payload []byte) bool {
	return bytes.HasPrefix(payload, []byte(`{"barrier":`))
}

// barrierState is the barrier of one connection.
type barrierState struct {
	epoch uint64
	id    string
	done  chan struct{} // closed when the barrier came back, or was given up
}

// sendBarrier publishes the barrier of the connection of epoch, once its
// subscriptions are in place.
func (c *Client) sendBarrier(epoch uint64) {
	id := ulid.MustNew(ulid.Timestamp(c.o.Now()), rand.Reader).String()
	b := &barrierState{epoch: epoch, id: id, done: make(chan struct{})}
	c.mu.Lock()
	if c.epoch.Load() != epoch {
		c.mu.Unlock()
		return
	}
	c.barrier = b
	c.mu.Unlock()
	select {
	case c.barrierSent <- struct{}{}:
	default:
	}
	payload, _ := json.Marshal(barrierMsg{Barrier: id, Device: c.o.DeviceID})
	c.cli.Publish(c.topic("cmd"), 1, false, payload)
}

// takeBarrier is the command worker's: every command received before the
// barrier is done.
func (c *Client) takeBarrier(m mqtt.Message) {
	var msg barrierMsg
	_ = json.Unmarshal(m.Payload(), &msg)
	c.mu.Lock()
	b := c.barrier
	c.mu.Unlock()
	if b != nil && msg.Barrier == b.id {
		c.closeBarrier(b)
		c.log.Info("commands queued at the broker are done; uploading", "epoch", b.epoch)
	}
	// An older connection's barrier, redelivered: nothing waits for it.
}

func (c *Client) closeBarrier(b *barrierState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-b.done:
	default:
		close(b.done)
	}
}

// waitBarrier holds the uploader until the connection's barrier is back, at
// most BarrierTimeout after the connection came up. It returns false when
// ctx ended.
func (c *Client) waitBarrier(ctx context.Context, epoch uint64) bool {
	deadline := time.NewTimer(c.o.BarrierTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		b := c.barrier
		lost := c.lost
		c.mu.Unlock()
		if c.epoch.Load() != epoch {
			return true // a new connection: the uploader starts over
		}
		if b != nil && b.epoch == epoch {
			select {
			case <-b.done:
				return true
			case <-deadline.C:
				c.closeBarrier(b)
				c.log.Warn("the barrier did not come back: uploading before commands queued at the broker may have arrived (can the device publish to its own command topic?)",
					"topic", c.topic("cmd"), "waited", c.o.BarrierTimeout)
				return true
			case <-lost:
				return true
			case <-ctx.Done():
				return false
			}
		}
		// Not sent yet: the subscription is still on its way.
		select {
		case <-c.barrierSent:
		case <-deadline.C:
			c.log.Warn("no barrier sent (subscription failed or slow): uploading before commands queued at the broker may have arrived",
				"waited", c.o.BarrierTimeout)
			return true
		case <-lost:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// commandWorker carries out commands one at a time in the order they
// arrived (paho hands them over in order, see onMessage), so the barrier
// is taken only after every command before it is done.
func (c *Client) commandWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.cmds.ready:
		}
		for {
			m, ok := c.cmds.pop()
			if !ok {
				break
			}
			if ctx.Err() != nil {
				return // not acknowledged: the broker delivers it again
			}
			if isBarrier(m.Payload()) && !strings.HasSuffix(m.Topic(), "/policy") {
				m.Ack()
				c.takeBarrier(m)
				continue
			}
			c.cmdMu.Lock()
			// Not ctx: a command begun is finished, receipt included,
			// even when the client is stopping.
			dealt := c.handle(context.WithoutCancel(ctx), m)
			c.cmdMu.Unlock()
			if dealt {
				m.Ack()
			}
		}
	}
}

// cmdQueue is a FIFO of messages: paho's reader hands them over without
// ever waiting on the worker (a reader held up holds the PUBACKs an erase
// waits for). Its bound is the broker's: commands are acknowledged only
// once carried out, so a broker sends at most its in-flight window of them
// (mosquitto 20, NATS 1,024 by default) before the first is done. A broker
// past maxQueuedCommands is not trusted to be one: what does not fit is
// left unacknowledged, which a broker delivers again on the next
// connection (a retained policy comes again on every subscribe), and
// counted.
type cmdQueue struct {
	mu      gosync.Mutex
	q       []mqtt.Message
	bytes   int
	refused uint64
	ready   chan struct{} // poked after a push
}

// Bounds of the command queue: far above any broker's in-flight window,
// and a few MiB at most (a command is a small signed token).
const (
	maxQueuedCommands     = 4096
	maxQueuedCommandBytes = 8 << 20
)

// push queues m and reports whether it fit.
func (q *cmdQueue) push(m mqtt.Message) bool {
	q.mu.Lock()
	if len(q.q) >= maxQueuedCommands || q.bytes+len(m.Payload()) > maxQueuedCommandBytes {
		q.refused++
		q.mu.Unlock()
		return false
	}
	q.q = append(q.q, m)
	q.bytes += len(m.Payload())
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

func (q *cmdQueue) pop() (mqtt.Message, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.q) == 0 {
		return nil, false
	}
	m := q.q[0]
	q.q[0] = nil
	q.q = q.q[1:]
	q.bytes -= len(m.Payload())
	return m, true
}
