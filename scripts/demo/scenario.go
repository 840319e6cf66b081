package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// The scenario's numbers and timing. The human calls go to numbers far
// apart, with seconds between a hang-up and the next call; the dialer's
// callees are all different too (a redial would be excused) and never
// one above the previous, so what gives the dialer away is the gap: a
// person needs more than a second after a hang-up, the dialer takes 0.3 s
// (pacing rule, min_gap_after_call_s 1, short_gaps 2).
var (
	humanCalls = []struct {
		to   string
		talk time.Duration
	}{
		{"+12125550147", 2 * time.Second},
		{"+13125550198", 2500 * time.Millisecond},
		{"+14155550123", 3 * time.Second},
	}
	humanRing  = 2 * time.Second // the edge rings this long before it answers
	humanThink = 4 * time.Second // from a hang-up to the next call

	burstCallees = []string{"+16175550111", "+12065550142", "+17135550190", "+13055550176", "+15035550133"}
	burstRing    = 300 * time.Millisecond
	burstTalk    = 500 * time.Millisecond
	burstGap     = 300 * time.Millisecond // from the end of one attempt to the next

	outsideCaller   = "+12125550100" // calls the line; the PBX forwards the call; consents later
	forwardedTarget = "+13125550199" // where the PBX forwards it
)

// Result is what the scenario saw.
type Result struct {
	Human     []call
	Burst     []call
	BurstStop int // the first attempt of the burst refused with 403 pacing (1-based); 0: none
	Forwarded call
	// EdgeInvites is how many INVITEs reached the edge: refused ones must not.
	EdgeInvites int
	ConsentOut  string // what `leadport-agent consent add` printed
	PingID      string
	PingReceipt string         // the receipt's status as the broker got it; "" if none came
	Synced      map[string]int // records the broker got, by type
	Status      string         // what `leadport-agent status` printed
}

// pacingWarning and diversionWarning are the Warning headers the agent
// puts on its refusals.
const (
	pacingWarning    = `399 leadport-agent "pacing"`
	diversionWarning = `399 leadport-agent "forwarding.diversion"`
)

// Problems lists where the result differs from what the demo shows; empty
// when everything happened as it should.
func (r *Result) Problems() []string {
	var p []string
	for i, c := range r.Human {
		if !c.Answered() {
			p = append(p, fmt.Sprintf("human call %d was not answered: %s", i+1, c.outcome()))
		}
	}
	switch {
	case r.BurstStop == 0:
		p = append(p, "the dialer burst was never refused with 403 pacing")
	case r.BurstStop > 3:
		p = append(p, fmt.Sprintf("the dialer burst was refused only at attempt %d, want at most 3", r.BurstStop))
	default:
		for i, c := range r.Burst {
			if i+1 < r.BurstStop && !c.Answered() {
				p = append(p, fmt.Sprintf("dialer attempt %d: %s, want answered", i+1, c.outcome()))
			}
			if i+1 >= r.BurstStop && (c.Status != 403 || c.Warning != pacingWarning) {
				p = append(p, fmt.Sprintf("dialer attempt %d: %s, want 403 pacing (the line is cooling down)", i+1, c.outcome()))
			}
		}
	}
	if r.Forwarded.Status != 403 || r.Forwarded.Warning != diversionWarning {
		p = append(p, fmt.Sprintf("forwarded call: %s, want 403 forwarding.diversion", r.Forwarded.outcome()))
	}
	if want := len(r.Human) + max(r.BurstStop-1, 0); r.EdgeInvites != want {
		p = append(p, fmt.Sprintf("the edge received %d INVITEs, want %d (refused calls must not reach it)", r.EdgeInvites, want))
	}
	if !strings.HasPrefix(r.ConsentOut, "consent recorded: ") {
		p = append(p, fmt.Sprintf("consent add printed %q", r.ConsentOut))
	}
	if r.PingReceipt != "done" {
		p = append(p, fmt.Sprintf("ping receipt %q, want done", r.PingReceipt))
	}
	for _, want := range []string{"on " + deviceID + ": OK", "blocked", "pacing", "forwarding.diversion"} {
		if !strings.Contains(r.Status, want) {
			p = append(p, fmt.Sprintf("`status` does not show %q", want))
		}
	}
	return p
}

// outcome is a call's answer in a few words.
func (c call) outcome() string {
	var s string
	switch {
	case c.Status != 0:
		s = fmt.Sprintf("%d %s", c.Status, c.Reason)
		if c.Warning != "" {
			s += ", Warning: " + c.Warning
		}
		if c.Err != nil {
			s += " (" + c.Err.Error() + ")"
		}
	case c.Err != nil:
		s = c.Err.Error()
	default:
		s = "no answer"
	}
	return s
}

// Scenario plays the demo's calls and commands against the running agent,
// narrating each step as it happens, and returns what it saw. An error
// means the demo could not go on (the agent died, ctx ended).
func (d *Demo) Scenario(ctx context.Context) (*Result, error) {
	r := &Result{}
	d.say("--- 1. A person calls from the line: ring, answer, talk, hang up, think")
	d.edge.setRing(humanRing)
	for i, h := range humanCalls {
		if i > 0 {
			if err := d.sleep(ctx, humanThink); err != nil {
				return r, err
			}
		}
		d.begin("call %d/%d  %s -> %s: INVITE", i+1, len(humanCalls), line, h.to)
		c := d.pbx.dial(ctx, d.sipPort, line, h.to, h.talk, func(s string) { d.more(", %s", s) })
		if c.Answered() {
			d.end(", talked %.1fs, hung up (BYE): metered", c.Talked.Seconds())
		} else {
			d.end(": %s", c.outcome())
		}
		r.Human = append(r.Human, c)
	}

	if err := d.sleep(ctx, 2*time.Second); err != nil {
		return r, err
	}
	d.say("--- 2. An auto-dialer on the same line: the next call %.1fs after each hang-up", burstGap.Seconds())
	d.edge.setRing(burstRing)
	for i, to := range burstCallees {
		if i > 0 {
			if err := d.sleep(ctx, burstGap); err != nil {
				return r, err
			}
		}
		d.begin("dialer %d/%d  %s -> %s: INVITE", i+1, len(burstCallees), line, to)
		c := d.pbx.dial(ctx, d.sipPort, line, to, burstTalk, func(s string) { d.more(", %s", s) })
		switch {
		case c.Answered():
			d.end(", hung up after %.1fs", c.Talked.Seconds())
		default:
			d.end(": %s", c.outcome())
		}
		if r.BurstStop == 0 && c.Status == 403 && c.Warning == pacingWarning {
			r.BurstStop = i + 1
		}
		r.Burst = append(r.Burst, c)
	}
	if r.BurstStop > 0 {
		d.say("the agent refused the dialer from attempt %d on (403, %s); the line stays refused for outbound calls for 15 minutes", r.BurstStop, pacingWarning)
	}

	if err := d.sleep(ctx, time.Second); err != nil {
		return r, err
	}
	d.say("--- 3. The PBX forwards a call from an outside number onward, off the line")
	diversion := fmt.Sprintf("<sip:%s@pbx.demo.invalid>;reason=unconditional", line)
	d.begin("forwarded  %s -> %s, Diversion: %s: INVITE", outsideCaller, forwardedTarget, diversion)
	r.Forwarded = d.pbx.dial(ctx, d.sipPort, outsideCaller, forwardedTarget, time.Second,
		func(s string) { d.more(", %s", s) }, sip.NewHeader("Diversion", diversion))
	d.end(": %s", r.Forwarded.outcome())
	r.EdgeInvites = d.edge.invitesSeen()
	d.say("the edge received %d INVITEs: the refused ones never left the agent", r.EdgeInvites)

	if err := d.sleep(ctx, time.Second); err != nil {
		return r, err
	}
	d.say("--- 4. A consent record, from the CRM or a technician")
	args := []string{"consent", "add", "--socket", d.Socket, "--subject", outsideCaller, "--purpose", "sales-calls", "--method", "verbal"}
	d.say("$ %s %s", d.opts.Agent, strings.Join(args, " "))
	out, err := d.run(ctx, args...)
	r.ConsentOut = out
	if err != nil {
		d.say("  -> failed: %v: %s", err, out)
	} else {
		d.say("  -> %s", out)
	}

	d.say("--- 5. The platform pings the device with a signed command, through the broker")
	if err := d.ping(ctx, r); err != nil {
		return r, err
	}
	if err := d.waitSynced(ctx, r); err != nil {
		return r, err
	}

	d.say("--- 6. What the agent shows")
	d.say("$ %s status --socket %s", d.opts.Agent, d.Socket)
	out, err = d.run(ctx, "status", "--socket", d.Socket)
	r.Status = out
	if err != nil {
		out += fmt.Sprintf("\n(status: %v)", err)
	}
	fmt.Fprintln(d.out, out)
	return r, nil
}

// ping signs a ping command with the platform key (`fleet sign`), sends
// it to the device's command topic (`fleet send`), and waits for its
// receipt on the broker.
func (d *Demo) ping(ctx context.Context, r *Result) error {
	r.PingID = fmt.Sprintf("demo-ping-%d", time.Now().UnixNano())
	token := filepath.Join(d.Dir, "ping.jws")
	signArgs := []string{"fleet", "sign", "--key", d.KeyFile, "--kid", platformKid, "--type", "ping", "--device", deviceID, "--id", r.PingID, "--ttl", "10m"}
	d.say("$ %s %s > %s", d.opts.Agent, strings.Join(signArgs, " "), token)
	out, err := d.run(ctx, signArgs...)
	if err != nil {
		d.say("  -> failed: %v: %s", err, out)
		return nil
	}
	if err := os.WriteFile(token, []byte(out+"\n"), 0o600); err != nil {
		return err
	}
	d.say("  -> a compact JWS (EdDSA, kid %s), %d bytes", platformKid, len(out))
	sent := time.Now()
	sendArgs := []string{"fleet", "send", "--broker", d.broker.url, "--device", deviceID, "--token", token}
	d.say("$ %s %s", d.opts.Agent, strings.Join(sendArgs, " "))
	out, err = d.run(ctx, sendArgs...)
	if err != nil {
		d.say("  -> failed: %v: %s", err, out)
		return nil
	}
	d.say("  -> %s", out)
	deadline := time.Now().Add(15 * time.Second)
	for r.PingReceipt = d.broker.receipt(r.PingID); r.PingReceipt == ""; r.PingReceipt = d.broker.receipt(r.PingID) {
		if time.Now().After(deadline) {
			d.say("no receipt for %s reached the broker within 15 s", r.PingID)
			return nil
		}
		if err := d.sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	d.say("broker got the receipt on %s/dev/%s/receipt: command %s %s, %.2fs after it was sent",
		topicPrefix, deviceID, r.PingID, r.PingReceipt, time.Since(sent).Seconds())
	return nil
}

// waitSynced waits until the agent's outbox is empty (every record
// delivered to the broker), then says what the broker got.
func (d *Demo) waitSynced(ctx context.Context, r *Result) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := d.apiStatus(ctx)
		if err == nil && pending(st) == 0 {
			break
		}
		if time.Now().After(deadline) {
			d.say("the agent's outbox is not empty after 15 s (%d pending)", pending(st))
			break
		}
		if err := d.sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	r.Synced = d.broker.counts()
	var parts []string
	for _, t := range []string{"usage", "violation", "consent", "receipt"} {
		parts = append(parts, fmt.Sprintf("%d %s", r.Synced[t], t))
	}
	d.say("broker got from %s: %s records; the agent's outbox is empty", deviceID, strings.Join(parts, ", "))
	if st := d.broker.lastStatus(); st != nil {
		d.say("retained status on %s/dev/%s/status: %v, %s calls, %s blocked", topicPrefix, deviceID,
			st["state"], num(lookup(st, "sip", "calls")), num(lookup(st, "sip", "blocks")))
	}
	return nil
}

// pending is the number of records in the agent's outbox (-1 unknown).
func pending(st map[string]any) int {
	ob, ok := lookup(st, "outbox").(map[string]any)
	if !ok {
		return -1
	}
	n := 0
	for _, v := range ob {
		if m, ok := v.(map[string]any); ok {
			if p, ok := m["pending"].(float64); ok {
				n += int(p)
			}
		}
	}
	return n
}

// sleep waits dur unless ctx ends or the agent exits first.
func (d *Demo) sleep(ctx context.Context, dur time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-d.agentDone:
		return fmt.Errorf("the agent exited (%v); the end of its log:\n%s", d.agentErr, d.logTail(20))
	case <-time.After(dur):
		return nil
	}
}
