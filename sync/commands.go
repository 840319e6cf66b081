package sync

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/sync/command"
)

// onMessage takes a command, a policy or a barrier. paho calls it in the
// order messages arrive (SetOrderMatters(true)), and it only queues them,
// never waiting (paho's reader also takes the PUBACKs an erase may be
// waiting for, through the upload gate):
// commandWorker carries them out one at a time, in that order, so a
// barrier is taken only after the commands that came before it (see
// barrier.go), and paho's reader is never held up by an erase. A message
// is acknowledged to the broker only once its effect and its receipt are
// stored, so a crash in between gets it delivered again; one still queued
// when the client stops is not acknowledged, and comes again.
func (c *Client) onMessage(_ mqtt.Client, m mqtt.Message) {
	if !c.cmds.push(m) {
		c.log.Warn("command queue full: the message is left unacknowledged, for the broker to deliver again on the next connection",
			"topic", m.Topic(), "queued_max", maxQueuedCommands)
	}
}

// handle returns false when the message must come again (the store
// failed), true when it is dealt with.
func (c *Client) handle(ctx context.Context, m mqtt.Message) bool {
	policyTopic := strings.HasSuffix(m.Topic(), "/policy")
	if policyTopic && len(m.Payload()) == 0 {
		return true // a retained policy cleared
	}
	now := c.o.Now()
	cmd, err := c.o.Verifier.Verify(m.Payload(), now)
	if err != nil {
		var r *command.Rejection
		if !errors.As(err, &r) {
			r = &command.Rejection{Reason: command.Malformed, Detail: err.Error()}
		}
		if policyTopic && r.ID != "" {
			// A retained policy comes again with every connection: answer
			// it once.
			if seen, err := c.o.Store.RememberCommand(r.ID, now.Add(30*24*time.Hour)); err != nil || seen {
				return err == nil
			}
		}
		c.log.Warn("command rejected", "topic", m.Topic(), "reason", string(r.Reason), "detail", r.Detail, "command_id", r.ID)
		c.count(true)
		id := r.ID
		if id == "" {
			id = "unreadable"
		}
		return c.receipt(ctx, id, Outcome{Status: Rejected, Reason: string(r.Reason)})
	}
	if policyTopic && cmd.Type != command.TypePolicy {
		c.count(true)
		return c.receipt(ctx, cmd.ID, Outcome{Status: Rejected, Reason: string(command.Unsupported)})
	}
	seen, err := c.o.Store.CommandSeen(cmd.ID)
	if err != nil {
		c.log.Error("command ledger unreadable; the command will come again", "err", err)
		return false
	}
	if seen {
		// A retained policy, or a redelivery after a crash between the
		// effect and the broker's acknowledgement: done already, and
		// answered. A new message with an old id is a replay.
		if policyTopic || m.Duplicate() {
			return true
		}
		c.count(true)
		return c.receipt(ctx, cmd.ID, Outcome{Status: Rejected, Reason: string(command.Replayed)})
	}
	fromDevice := cmd.Device != command.AllDevices
	if cmd.Type == command.TypePolicy && !c.newerPolicy(policyVersion(cmd.Args), fromDevice) {
		// An older or equal policy: nothing to do; say so once.
		if _, err := c.o.Store.RememberCommand(cmd.ID, cmd.ExpiresAt.Add(command.Skew)); err != nil {
			return false
		}
		if policyTopic {
			return true
		}
		return c.receipt(ctx, cmd.ID, Outcome{Status: Rejected, Reason: string(command.StaleVersion)})
	}
	out := c.execute(ctx, cmd)
	if cmd.Type == command.TypePolicy && out.Status == Done {
		c.mu.Lock()
		c.policyFromDevice = fromDevice
		c.mu.Unlock()
	}
	if !c.receipt(ctx, cmd.ID, out) {
		return false
	}
	if _, err := c.o.Store.RememberCommand(cmd.ID, cmd.ExpiresAt.Add(command.Skew)); err != nil {
		c.log.Error("command done but not remembered; a redelivery would run it again", "command_id", cmd.ID, "err", err)
	}
	c.count(out.Status != Done)
	c.RefreshStatus()
	return true
}

// newerPolicy: the higher version wins; on a tie a device's own policy
// beats the fleet's (docs/protocol.md).
func (c *Client) newerPolicy(version int64, fromDevice bool) bool {
	cur := c.o.Handler.PolicyVersion()
	c.mu.Lock()
	curFromDevice := c.policyFromDevice
	c.mu.Unlock()
	return version > cur || (version == cur && fromDevice && !curFromDevice && cur > 0)
}

func policyVersion(args json.RawMessage) int64 {
	var p struct {
		Version int64 `json:"version"`
	}
	_ = json.Unmarshal(args, &p)
	return p.Version
}

// execute runs a command; an erase holds the upload gate, so that nothing
// read before it is published after it.
func (c *Client) execute(ctx context.Context, cmd *command.Command) Outcome {
	if cmd.Type == command.TypeErase {
		c.erasing.Add(1)
		c.gate.Lock()
		c.erasing.Add(-1)
		defer c.gate.Unlock()
	}
	c.log.Info("command", "command_id", cmd.ID, "type", cmd.Type, "kid", cmd.KeyID)
	return c.o.Handler.Execute(ctx, cmd)
}

func (c *Client) count(rejected bool) {
	c.mu.Lock()
	c.stats.Commands++
	if rejected {
		c.stats.Rejected++
	}
	c.mu.Unlock()
}

// receipt stores a command's receipt in the outbox; it goes up like any
// record.
func (c *Client) receipt(ctx context.Context, id string, out Outcome) bool {
	_, err := c.o.Store.Append(ctx, &store.Receipt{
		CommandID: id, Status: string(out.Status), Reason: out.Reason, At: c.o.Now().UTC(),
		Result: out.Result, Subject: out.Subject,
	})
	if err != nil {
		c.log.Error("receipt not stored; the command will come again", "command_id", id, "err", err)
		return false
	}
	c.Wake()
	return true
}
