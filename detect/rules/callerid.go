package rules

import (
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/policy"
)

// callerID: an outbound call from a line's phone or trunk that presents
// another identity. Two signs: the identities of the INVITE disagree (one
// names the line, another a different number), or the INVITE comes from
// where a line was registered and presents none of the identities
// registered from there. Withheld identities (anonymous) and names that
// are not numbers (extensions) are not another identity.
func (e *Engine) callerID(d *decision, ls *lineState) {
	ev := d.ev
	id := presented(ev.Request)
	if ls != nil {
		var others []string
		var headers []string
		for i, u := range [...]string{id.from, id.pai, id.rpid} {
			if anonymous(u) {
				continue
			}
			n, ok := e.lines.Normalize(u)
			if !ok || n == ev.Line {
				continue
			}
			others = append(others, n)
			headers = append(headers, identityHeaders[i])
		}
		if len(others) > 0 {
			d.add(trip{rule: policy.CallerIDMismatch, status: sip.StatusForbidden, numbers: others,
				evidence: map[string]any{"sign": "identities_disagree", "headers": headers}})
		}
		return
	}
	if len(e.sources) == 0 {
		return
	}
	s := e.sources[ev.Request.Source()]
	if s == nil {
		return
	}
	var line string
	for _, r := range s.ids {
		if r.line && r.expires.After(ev.At) {
			line = r.user
			break
		}
	}
	if line == "" {
		return
	}
	var shown []string
	for _, u := range [...]string{id.from, id.pai, id.rpid} {
		if anonymous(u) {
			continue
		}
		n, _ := e.lines.Normalize(u)
		for _, r := range s.ids {
			if r.user == n && r.expires.After(ev.At) {
				return // an identity registered from this phone
			}
		}
		if n, ok := e.lines.Normalize(u); ok {
			shown = append(shown, n)
		}
	}
	if len(shown) == 0 {
		return
	}
	d.add(trip{rule: policy.CallerIDMismatch, line: line, status: sip.StatusForbidden, numbers: shown,
		evidence: map[string]any{"sign": "registered_phone_presents_other"}})
}

var identityHeaders = [...]string{"From", "P-Asserted-Identity", "Remote-Party-ID"}
