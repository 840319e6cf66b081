package rules

import (
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/policy"
)

// redirect: the local side answered a call on a line with a 3xx, or with
// a 181 that says it is being forwarded. Relaying either would hand the
// caller to another number.
func (e *Engine) redirect(d *decision, _ *lineState) {
	res := d.ev.Response
	status := res.StatusCode
	var named string
	switch {
	case status >= 300 && status < 400:
	case status == 181:
		switch {
		case header(res, "Diversion") != nil:
			named = "Diversion"
		case header(res, "History-Info") != nil:
			named = "History-Info"
		default:
			return
		}
	default:
		return
	}
	var targets []string
	headerValues(res, "Contact", func(v string) bool {
		u, _ := addrSpec(v)
		if n, ok := e.lines.Normalize(uriUser(u)); ok {
			targets = append(targets, n)
		}
		return len(targets) < 8
	})
	ev := map[string]any{"status": status, "replaced_with": e.pol.Forwarding.RedirectStatus}
	if named != "" {
		ev["header"] = named
	}
	d.add(trip{rule: policy.ForwardingRedirect, status: e.pol.Forwarding.RedirectStatus, evidence: ev, numbers: targets})
}

// refer: a transfer inside a line's dialog hands its call to someone else.
func (e *Engine) refer(d *decision, _ *lineState) {
	req := d.ev.Request
	var targets []string
	if h := header(req, "Refer-To"); h != nil {
		u, _ := addrSpec(h.Value())
		if n, ok := e.lines.Normalize(uriUser(u)); ok {
			targets = append(targets, n)
		}
	}
	d.add(trip{rule: policy.ForwardingRefer, status: sip.StatusForbidden, numbers: targets,
		evidence: map[string]any{"in_dialog": d.ev.InDialog, "direction": d.ev.Direction.String()}})
}

// featureCode: a code that sets up call forwarding, dialled from a line.
func (e *Engine) featureCode(d *decision, ls *lineState) {
	if ls == nil {
		return
	}
	user := dialled(d.ev.Request.Recipient.User)
	if user == "" || (user[0] != '*' && user[0] != '#') {
		return
	}
	for _, code := range e.codes {
		if rest, ok := strings.CutPrefix(user, code); ok {
			var targets []string
			if n, ok := e.lines.Normalize(strings.Trim(rest, "*#")); ok && rest != "" {
				targets = append(targets, n)
			}
			d.add(trip{rule: policy.ForwardingFeatureCode, status: sip.StatusForbidden, numbers: targets,
				evidence: map[string]any{"code": code}})
			return
		}
	}
}

// diversion: an outbound INVITE that says it was diverted from a line
// (RFC 5806 Diversion, or RFC 7044 History-Info retargeted from it).
func (e *Engine) diversion(d *decision, _ *lineState) {
	req := d.ev.Request
	var line, header, reason string
	headerValues(req, "Diversion", func(v string) bool {
		u, params := addrSpec(v)
		if l, ok := e.lines.Match(uriUser(u)); ok {
			line, header, reason = l, "Diversion", paramValue(params, "reason")
			return false
		}
		return true
	})
	if line == "" {
		n, last := 0, 0
		headerValues(req, "History-Info", func(string) bool { n++; return true })
		headerValues(req, "History-Info", func(v string) bool {
			last++
			u, _ := addrSpec(v)
			l, ok := e.lines.Match(uriUser(u))
			// The last entry is the current target; an entry before it
			// naming a line, or one with a cause, was retargeted away.
			if ok && (last < n || hasCause(u)) {
				line, header = l, "History-Info"
				if c := paramValue(u, "cause"); c != "" {
					reason = "cause=" + c
				}
				return false
			}
			return true
		})
	}
	if line == "" {
		return
	}
	var targets []string
	if d.ev.Remote != "" {
		targets = append(targets, d.ev.Remote)
	}
	ev := map[string]any{"header": header}
	if reason != "" {
		ev["reason"] = reason
	}
	d.add(trip{rule: policy.ForwardingDiversion, line: line, status: sip.StatusForbidden, evidence: ev, numbers: targets})
}

// bridge: while an inbound call on a line rings or is up, the device
// starts an outbound leg to a third party: a PBX connecting the caller
// onward. Two signs: an outbound call on the same line soon after the
// inbound one started or was answered, or an outbound call (on any line
// or none) presenting the inbound caller's number.
func (e *Engine) bridge(d *decision, ls *lineState) {
	win := time.Duration(e.pol.Forwarding.BridgeWindowS) * time.Second
	if win <= 0 {
		return
	}
	ev := d.ev
	if ls != nil {
		for i := range ls.calls {
			c := &ls.calls[i]
			if c.dir != detect.Inbound || c.remote == ev.Remote {
				continue
			}
			if t, ok := within(c, ev.At, win); ok {
				d.add(bridgeTrip(ev.Line, c, t, win, ev.Remote, "same_line"))
				return
			}
		}
	}
	if len(e.inbound) == 0 {
		return
	}
	id := presented(ev.Request)
	for _, u := range [...]string{id.from, id.pai, id.rpid} {
		if anonymous(u) {
			continue
		}
		n, ok := e.lines.Normalize(u)
		// A line presenting its own number presents no one else's: in a
		// call between two of the device's lines, the second leg is an
		// inbound call from the first line, which may go on dialing.
		if !ok || e.inbound[n] == 0 || n == ev.Line {
			continue
		}
		for l, s := range e.state {
			for i := range s.calls {
				c := &s.calls[i]
				if c.dir == detect.Inbound && c.remote == n {
					if t, ok := within(c, ev.At, win); ok {
						d.add(bridgeTrip(l, c, t, win, ev.Remote, "caller_presented"))
						return
					}
				}
			}
		}
	}
}

// within reports whether at is inside the window after the inbound call
// started ringing or, once up, after it was answered.
func within(c *liveCall, at time.Time, win time.Duration) (time.Duration, bool) {
	t := c.since(at)
	return t, t >= 0 && t <= win
}

func bridgeTrip(line string, c *liveCall, since, win time.Duration, callee, how string) trip {
	state := "ringing"
	if c.isAnswered() {
		state = "up"
	}
	var numbers []string
	for _, n := range []string{c.remote, callee} {
		if n != "" {
			numbers = append(numbers, n)
		}
	}
	return trip{rule: policy.ForwardingBridge, line: line, status: sip.StatusForbidden, numbers: numbers,
		evidence: map[string]any{"inbound": state, "seconds_after": since.Seconds(), "window_s": win.Seconds(), "sign": how}}
}
