package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect/passport"
)

// The edge's verifier refuses tokens about a minute off its clock; the
// agent corrects by the offset it measures, but a clock that far off is
// worth fixing before it matters.
const (
	doctorEdgeClockWarn = 10 * time.Second
	doctorEdgeClockFail = 60 * time.Second
)

// checkIdentityKey looks at the call-signing key the way the agent will
// load it: present (or to be made at first start), mode 0600, a P-256 key.
func (d *doctor) checkIdentityKey() doctorCheck {
	r := doctorCheck{Name: "identity key"}
	path := filepath.Join(doctorAbs(d.cfg.DataDir), agent.IdentityKeyFile)
	k, err := passport.LoadKey(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Status = doctorOK
		r.Found = path + " not created yet: the agent creates it at first start (mode 0600); `leadport-agent identity` then prints what the platform enrols"
		return r
	case errors.Is(err, fs.ErrPermission):
		return d.cannotLook(r, path)
	case errors.Is(err, passport.ErrKeyPermissions):
		r.Status, r.Found, r.Fix = doctorFail, err.Error(), "chmod 600 "+path
		return r
	case err != nil:
		r.Status, r.Found = doctorFail, err.Error()
		r.Fix = fmt.Sprintf("move %s aside: the agent makes a new key at its next start, which the platform must enrol again (leadport-agent identity)", path)
		return r
	}
	id := agent.IdentityOf(d.cfg.DeviceID, k)
	r.Status = doctorOK
	r.Found = fmt.Sprintf("%s: %s key %s, created %s", path, id.Alg, id.KeyID, doctorDate(id.CreatedAt))
	if d.cfg.SIP.Identity == config.IdentityOff {
		r.Status = doctorWarn
		r.Found += "; sip.identity is off: calls go out unsigned and an edge that verifies refuses them"
		r.Fix = "set sip.identity: sign once the platform has enrolled this key"
	}
	return r
}

// sawUpstreamDate keeps the Date of the upstream's answer to doctor's
// OPTIONS, for checkEdgeClock.
func (d *doctor) sawUpstreamDate(date string, received time.Time) {
	t, err := http.ParseTime(date)
	if err != nil {
		return
	}
	d.mu.Lock()
	d.edgeOffset = t.Add(500 * time.Millisecond).Sub(received)
	d.edgeDate = true
	d.mu.Unlock()
}

// checkEdgeClock compares this host's clock with the Leadport edge's (the
// Date of its answer to OPTIONS): the tokens the agent signs are refused
// when they look a minute old or young.
func (d *doctor) checkEdgeClock() (doctorCheck, bool) {
	d.mu.Lock()
	off, ok := d.edgeOffset, d.edgeDate
	d.mu.Unlock()
	if !ok {
		return doctorCheck{}, false
	}
	r := doctorCheck{Name: "edge clock"}
	abs := off.Abs()
	dir := "ahead of"
	if off > 0 {
		dir = "behind"
	}
	r.Found = fmt.Sprintf("this host is %.1f s %s the edge (from the Date of its answer)", abs.Seconds(), dir)
	switch {
	case abs > doctorEdgeClockFail:
		r.Status = doctorFail
		r.Fix = "set the time and enable NTP (timedatectl set-ntp true): the agent corrects its signatures by the offset it measures, but only once the edge has answered it"
	case abs > doctorEdgeClockWarn:
		r.Status = doctorWarn
		r.Fix = "enable NTP (timedatectl set-ntp true): the edge refuses calls signed a minute off its clock"
	default:
		r.Status = doctorOK
	}
	return r, true
}

// checkUpstreamSize says whether INVITEs that carry an Identity (over
// 1,300 bytes with SDP: docs/sip.md) can go to the edge over TCP, as RFC
// 3261 section 18.1.1 asks. With a udp:// upstream the agent tries TCP to
// the same address for such requests and falls back to fragmented UDP.
func (d *doctor) checkUpstreamSize(ctx context.Context) (doctorCheck, bool) {
	e := d.cfg.SIP.Upstream
	if e.IsZero() || d.cfg.SIP.Identity == config.IdentityOff {
		return doctorCheck{}, false
	}
	r := doctorCheck{Name: "invite size"}
	if e.Transport != "udp" {
		r.Status, r.Found = doctorOK, fmt.Sprintf("the upstream is %s: signed INVITEs of any size go whole", e.Transport)
		return r, true
	}
	ctx, cancel := context.WithTimeout(ctx, doctorUpstreamTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, e.Host)
	if err != nil || len(addrs) == 0 {
		return doctorCheck{}, false // the upstream check reports it
	}
	tcp := e
	tcp.Transport = "tcp"
	if _, _, err := doctorOptions(ctx, tcp, addrs[0]); err == nil {
		r.Status, r.Found = doctorOK, fmt.Sprintf("the edge answers TCP on %s: INVITEs over 1,300 bytes (with an Identity, most) go over TCP", tcp.String())
		return r, true
	}
	r.Status = doctorWarn
	r.Found = fmt.Sprintf("the edge answers only UDP on %s: INVITEs with an Identity (about 1,400 bytes with SDP) go as fragmented UDP, which some firewalls and NATs drop", e.String())
	r.Fix = "ask Leadport for the edge's TCP or TLS address and set sip.upstream to it (tcp://... or tls://...)"
	return r, true
}
