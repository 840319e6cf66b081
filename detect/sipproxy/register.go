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
	mu      sync.Mutex
	lines   map[string][]Binding
	tokens  map[string]alias
	results map[string]RegisterResult // by line; only configured lines
}

// RegisterResult is the last final answer the registrar gave a line's
// REGISTER, and how many non-2xx answers came in a row. An authenticated
// registration is a 401 or 407 and then a 2xx, so one is normal; two or
// more mean the line is not registered (Failing).
type RegisterResult struct {
	Status   int
	At       time.Time
	Failures int
}

// Failing tells a line whose registrations do not succeed.
func (r RegisterResult) Failing() bool { return r.Failures >= 2 }

type alias struct {
	uri     sip.Uri
	expires time.Time
}

// aliasPrefix marks the user part of a contact the agent made up.
const aliasPrefix = "lpa-"

func newRegistrations() *registrations {
	return &registrations{lines: map[string][]Binding{}, tokens: map[string]alias{}, results: map[string]RegisterResult{}}
}

// prepareRegister makes calls to the registering phone come back through
// the agent: a Path entry naming the agent's upstream-facing address, or
// each Contact replaced by an alias at that address.
//
// In path mode the agent also adds the "path" option tag to Supported on
// the phone's behalf. RFC 3327 has a registrar refuse a Path (420) when
// the registering UA did not announce Path support, and a strict one
// (kamailio's default path_mode 2) does, while most phones never announce
// it. The tag says the UA understands the Path in the registrar's answer;
// the phone never has to: the route the Path builds ends at the agent,
// which relays the phone's calls from it as from any other hop, and the
// Path header in the 200 is information the phone may ignore.
func (p *Proxy) prepareRegister(out *side, fwd *sip.Request) {
	tp := strings.ToLower(fwd.Transport())
	rr := rrHeader(out, tp)
	if p.registerMode() == RegisterPath {
		fwd.PrependHeader(sip.NewHeader("Path", "<"+rr.Address.String()+">"))
		addOptionTag(fwd, "Supported", "path")
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

// addOptionTag adds tag to the header name (Supported, Require) unless it
// is there, creating the header if need be.
func addOptionTag(req *sip.Request, name, tag string) {
	for _, h := range req.GetHeaders(name) {
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return
			}
		}
	}
	if h := req.GetHeader(name); h != nil {
		v := h.Value()
		req.RemoveHeader(name)
		req.AppendHeader(sip.NewHeader(name, v+", "+tag))
		return
	}
	req.AppendHeader(sip.NewHeader(name, tag))
}

// registerMode is the mode in force: the configured one, or contact once
// the registrar has shown it does not take a Path (pathRefused).
func (p *Proxy) registerMode() RegisterMode {
	if p.opts.RegisterMode == RegisterPath && p.pathRefused.Load() {
		return RegisterContact
	}
	return p.opts.RegisterMode
}

// registerAnswered notes the registrar's final answer to a REGISTER: the
// line's registration state, and whether the registrar takes a Path. A
// 420 naming "path" in Unsupported, or a 2xx that does not echo the Path
// the agent inserted (RFC 3327 5.3: a registrar that supports Path returns
// it), means calls to the phone would never be routed through the agent:
// from then on REGISTERs go in contact mode, which needs nothing of the
// registrar. The phone's next attempt or refresh takes the new mode.
func (p *Proxy) registerAnswered(line string, fwd *sip.Request, res *sip.Response, at time.Time) {
	p.regs.result(line, res.StatusCode, at)
	if fwd.GetHeader("Path") == nil || p.pathRefused.Load() {
		return
	}
	why := ""
	switch PathSupport(res) {
	case PathRefused:
		why = "the registrar refuses Path (420 Unsupported: path)"
	case PathIgnored:
		why = "the registrar ignores Path (no Path in its 200)"
	}
	if why != "" && p.pathRefused.CompareAndSwap(false, true) {
		p.log.Warn("registrations go in contact mode from now on: "+why, "register_mode", string(RegisterContact))
	}
}

// PathAnswer is what a registrar's final answer to a REGISTER that
// carried a Path says of its Path support (RFC 3327).
type PathAnswer int

// What a registrar's answer says of Path.
const (
	PathUnknown PathAnswer = iota // a challenge, an error, or a 2xx with no binding to go by
	PathTaken                     // a 2xx that echoes the Path (RFC 3327 5.3)
	PathIgnored                   // a 2xx with bindings and no Path: calls would bypass the agent
	PathRefused                   // 420 with Unsupported: path
)

// PathSupport reads a registrar's final answer to a REGISTER with a Path:
// the proxy's fallback to contact mode and the doctor's probe judge it the
// same way.
func PathSupport(res *sip.Response) PathAnswer {
	switch code := res.StatusCode; {
	case code == sip.StatusBadExtension && headerHasTag(res, "Unsupported", "path"):
		return PathRefused
	case code < 200 || code >= 300:
		return PathUnknown
	case res.GetHeader("Path") != nil:
		return PathTaken
	case len(res.GetHeaders("Contact")) > 0:
		return PathIgnored
	}
	return PathUnknown
}

func headerHasTag(m interface{ GetHeaders(string) []sip.Header }, name, tag string) bool {
	for _, h := range m.GetHeaders(name) {
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return true
			}
		}
	}
	return false
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

// result notes a final answer to a line's REGISTER. Answers for numbers
// that are not lines are not kept: the map stays bounded by the lines.
func (r *registrations) result(line string, status int, at time.Time) {
	if line == "" || status < 200 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.results[line]
	if status < 300 {
		res.Failures = 0
	} else {
		res.Failures++
	}
	res.Status, res.At = status, at
	r.results[line] = res
}

func (r *registrations) resultsSnapshot() map[string]RegisterResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]RegisterResult, len(r.results))
	for l, v := range r.results {
		out[l] = v
	}
	return out
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
