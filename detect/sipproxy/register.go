package sipproxy

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Binding is a contact registered for a line through the agent.
type Binding struct {
	Line    string
	Contact string // the phone's own contact URI; may carry the number
	Expires time.Time
	uri     sip.Uri
}

// registrations remembers, per line, the contacts the registrar accepted,
// and in contact mode the agent's aliases for them.
type registrations struct {
	mu     sync.Mutex
	lines  map[string][]Binding
	tokens map[string]alias
}

type alias struct {
	uri     sip.Uri
	expires time.Time
}

// aliasPrefix marks the user part of a contact the agent made up.
const aliasPrefix = "lpa-"

func newRegistrations() *registrations {
	return &registrations{lines: map[string][]Binding{}, tokens: map[string]alias{}}
}

// prepareRegister makes calls to the registering phone come back through
// the agent: a Path entry naming the agent's upstream-facing address, or
// each Contact replaced by an alias at that address.
func (p *Proxy) prepareRegister(out *side, fwd *sip.Request) {
	tp := strings.ToLower(fwd.Transport())
	rr := rrHeader(out, tp)
	if p.opts.RegisterMode == RegisterPath {
		fwd.PrependHeader(sip.NewHeader("Path", "<"+rr.Address.String()+">"))
		return
	}
	for _, h := range fwd.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok || c.Address.Wildcard {
			continue
		}
		var b [8]byte
		rand.Read(b[:])
		token := aliasPrefix + hex.EncodeToString(b[:])
		p.regs.mu.Lock()
		p.regs.tokens[token] = alias{uri: *c.Address.Clone(), expires: p.now().Add(2 * time.Hour)}
		p.regs.mu.Unlock()
		c.Address = sip.Uri{Scheme: "sip", User: token, Host: out.host, Port: rr.Address.Port,
			UriParams: sip.HeaderParams{{K: "transport", V: tp}}}
	}
}

// registered records the registrar's 2xx: the contacts now bound to the
// line. In contact mode the aliases in it are turned back into the phone's
// own contacts, which is what the phone expects to see.
func (p *Proxy) registered(line string, req *sip.Request, res *sip.Response, at time.Time) {
	expiresHdr := 3600
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil {
			expiresHdr = n
		}
	}
	var bs []Binding
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok || c.Address.Wildcard {
			continue
		}
		if orig, ok := p.regs.alias(c.Address.User); ok {
			c.Address = orig
		}
		exp := expiresHdr
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil {
				exp = n
			}
		}
		if exp <= 0 {
			continue
		}
		bs = append(bs, Binding{Line: line, Contact: c.Address.String(), Expires: at.Add(time.Duration(exp) * time.Second), uri: *c.Address.Clone()})
		p.regs.touchAlias(c.Address, at.Add(time.Duration(exp)*time.Second+time.Minute))
	}
	p.gateRegistered(req, bs)
	if line == "" {
		return
	}
	p.regs.mu.Lock()
	if len(bs) == 0 {
		delete(p.regs.lines, line)
	} else {
		p.regs.lines[line] = bs
	}
	p.regs.mu.Unlock()
}

func (r *registrations) alias(user string) (sip.Uri, bool) {
	if !strings.HasPrefix(user, aliasPrefix) {
		return sip.Uri{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.tokens[user]
	return a.uri, ok
}

// touchAlias keeps an alias alive as long as its binding.
func (r *registrations) touchAlias(orig sip.Uri, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for t, a := range r.tokens {
		if a.uri.String() == orig.String() && a.expires.Before(until) {
			a.expires = until
			r.tokens[t] = a
		}
	}
}

// byToken maps a Request-URI that is one of the agent's aliases back to
// the phone's contact.
func (r *registrations) byToken(user, host string, p *Proxy) (sip.Uri, bool) {
	if !strings.HasPrefix(user, aliasPrefix) || !p.isOurs(&sip.Uri{Host: host}) && !p.isListenHost(p.local, host) && !p.isListenHost(p.up, host) {
		return sip.Uri{}, false
	}
	u, ok := r.alias(user)
	if !ok {
		return sip.Uri{}, false
	}
	return *u.Clone(), true
}

// first returns a live binding of the line.
func (r *registrations) first(line string, now time.Time) (Binding, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.lines[line] {
		if b.Expires.After(now) {
			return b, true
		}
	}
	return Binding{}, false
}

func (r *registrations) expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for l, bs := range r.lines {
		live := bs[:0]
		for _, b := range bs {
			if b.Expires.After(now) {
				live = append(live, b)
			}
		}
		if len(live) == 0 {
			delete(r.lines, l)
		} else {
			r.lines[l] = live
		}
	}
	for t, a := range r.tokens {
		if a.expires.Before(now) {
			delete(r.tokens, t)
		}
	}
}

func (r *registrations) count(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, bs := range r.lines {
		for _, b := range bs {
			if b.Expires.After(now) {
				n++
			}
		}
	}
	return n
}

func (r *registrations) snapshot(now time.Time) map[string][]Binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]Binding{}
	for l, bs := range r.lines {
		for _, b := range bs {
			if b.Expires.After(now) {
				out[l] = append(out[l], b)
			}
		}
	}
	return out
}
