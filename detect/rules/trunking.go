package rules

import (
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/policy"
)

// concurrent: a line is for one live dialog between two people; more
// dialogs at once than the policy allows mean it is trunked.
func (e *Engine) concurrent(d *decision, ls *lineState) {
	if ls.find(callID(d.ev.Request)) >= 0 {
		return // another branch of a call already counted
	}
	max := e.pol.Trunking.MaxDialogsPerLine
	if n := len(ls.calls); n+1 > max {
		d.add(trip{rule: policy.TrunkingConcurrent, status: sip.StatusBusyHere,
			evidence: map[string]any{"dialogs": n + 1, "max_dialogs_per_line": max}})
	}
}

// binding is one contact bound to a line by a REGISTER through the agent.
type binding struct {
	key     string // +sip.instance, else user@host of the Contact
	expires time.Time
}

// srcRegs are the identities registered from one source address, for the
// caller-ID rule: a phone may carry several accounts, and may present any
// of them.
type srcRegs struct {
	ids []srcID
}

type srcID struct {
	user    string // normalised when it is a number
	line    bool
	expires time.Time
}

// defaultExpires is what RFC 3261 10.2.1 gives a binding with no expiry.
const defaultExpires = 3600

// register follows REGISTERs: the contacts bound to each line, and which
// identities each source registered.
func (e *Engine) register(d *decision) {
	ev := d.ev
	req := ev.Request
	at := ev.At
	headerExp := defaultExpires
	if h := header(req, "Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			headerExp = n
		}
	}
	type change struct {
		key    string
		exp    int
		remove bool
	}
	var changes []change
	var wildcard bool
	for _, h := range req.Headers() {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		if c.Address.Wildcard {
			wildcard = true
			continue
		}
		exp := headerExp
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				exp = n
			}
		}
		key, _ := c.Params.Get("+sip.instance")
		if key == "" {
			key = c.Address.User + "@" + strings.ToLower(c.Address.Host)
		}
		changes = append(changes, change{key: key, exp: exp, remove: exp == 0})
	}
	if len(changes) == 0 && !wildcard {
		return // a query of the bindings
	}
	e.noteSource(req, ev.Line, at, headerExp, changes == nil)
	if ev.Line == "" {
		return
	}
	ls := e.line(ev.Line)
	next := make([]binding, 0, len(ls.contacts)+len(changes))
	if !wildcard {
		for _, b := range ls.contacts {
			if b.expires.After(at) {
				next = append(next, b)
			}
		}
	}
	for _, c := range changes {
		i := 0
		for ; i < len(next) && next[i].key != c.key; i++ {
		}
		switch {
		case c.remove && i < len(next):
			next = append(next[:i], next[i+1:]...)
		case c.remove:
		case i < len(next):
			next[i].expires = at.Add(time.Duration(c.exp) * time.Second)
		default:
			next = append(next, binding{key: c.key, expires: at.Add(time.Duration(c.exp) * time.Second)})
		}
	}
	blocked := false
	if e.pol.ActionOf(policy.TrunkingRegistrations) != policy.Off {
		if max := e.pol.Trunking.MaxContactsPerLine; len(next) > max {
			d.add(trip{rule: policy.TrunkingRegistrations, status: sip.StatusForbidden,
				evidence: map[string]any{"contacts": len(next), "max_contacts_per_line": max}})
			blocked = e.pol.ActionOf(policy.TrunkingRegistrations) == policy.Block
		}
	}
	if !blocked {
		ls.contacts = next
	}
}

// noteSource remembers that the request's source registered its AOR.
func (e *Engine) noteSource(req *sip.Request, line string, at time.Time, exp int, removeAll bool) {
	src := req.Source()
	to := req.To()
	if src == "" || to == nil {
		return
	}
	user := to.Address.User
	if n, ok := e.lines.Normalize(user); ok {
		user = n
	}
	s := e.sources[src]
	if s == nil {
		if len(e.sources) >= e.opts.MaxSources {
			e.pruneSources(at)
			if len(e.sources) >= e.opts.MaxSources {
				return
			}
		}
		s = &srcRegs{}
		e.sources[src] = s
	}
	until := at.Add(time.Duration(exp) * time.Second)
	for i := range s.ids {
		if s.ids[i].user == user {
			s.ids[i].expires = until
			return
		}
	}
	if exp > 0 && len(s.ids) < 16 {
		s.ids = append(s.ids, srcID{user: user, line: line != "", expires: until})
	}
}

func (e *Engine) pruneSources(at time.Time) {
	for k, s := range e.sources {
		live := s.ids[:0]
		for _, id := range s.ids {
			if id.expires.After(at) {
				live = append(live, id)
			}
		}
		s.ids = live
		if len(live) == 0 {
			delete(e.sources, k)
		}
	}
}
