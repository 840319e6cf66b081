package doctor

import (
	"context"
	"fmt"
	"net"

	"github.com/leadport/leadport-agent/agent/config"
)

// inviteSize says whether INVITEs that carry an Identity (over 1,300 bytes
// with SDP: docs/sip.md) can go to the edge over TCP, as RFC 3261 section
// 18.1.1 asks. With a udp:// upstream the agent tries TCP to the same
// address for such requests and falls back to fragmented UDP. It reports
// nothing when calls are not signed or there is no upstream, or when the
// upstream does not resolve (the upstream check says so).
type inviteSize struct{}

func (inviteSize) Name() string { return "invite size" }

func (inviteSize) Run(ctx context.Context, env *Env) []Result {
	e := env.Config.SIP.Upstream
	if e.IsZero() || env.Config.SIP.Identity == config.IdentityOff {
		return nil
	}
	var r Result
	if e.Transport != "udp" {
		r.Status, r.Found = OK, fmt.Sprintf("the upstream is %s: signed INVITEs of any size go whole", e.Transport)
		return []Result{r}
	}
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, e.Host)
	if err != nil || len(addrs) == 0 {
		return nil // the upstream check reports it
	}
	tcp := e
	tcp.Transport = "tcp"
	if _, _, err := ping(ctx, tcp, addrs[0]); err == nil {
		r.Status, r.Found = OK, fmt.Sprintf("the edge answers TCP on %s: INVITEs over 1,300 bytes (with an Identity, most) go over TCP", tcp.String())
		return []Result{r}
	}
	r.Status = Warn
	r.Found = fmt.Sprintf("the edge answers only UDP on %s: INVITEs with an Identity (about 1,400 bytes with SDP) go as fragmented UDP, which some firewalls and NATs drop", e.String())
	r.Fix = "ask Leadport for the edge's TCP or TLS address and set sip.upstream to it (tcp://... or tls://...)"
	return []Result{r}
}
