package sipproxy

import (
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// stripIdentity removes every Identity header (long name or its compact
// form "y", RFC 8224 section 4) from a request going upstream: only the
// agent vouches for calls, so a PBX cannot pass a forged or replayed one
// on. It reports how many it removed.
func stripIdentity(req *sip.Request) int {
	n := 0
	for {
		var name string
		for _, h := range req.Headers() {
			if hn := h.Name(); strings.EqualFold(hn, "identity") || strings.EqualFold(hn, "y") {
				name = hn
				break
			}
		}
		if name == "" || !req.RemoveHeader(name) {
			return n
		}
		n++
	}
}

// signCall adds the agent's Identity to an outbound initial INVITE on a
// line, decided where the rules decided: a blocked request never gets
// here. A signing failure lets the call out unsigned (the edge refuses
// it) and is counted and logged: the proxy must not be what takes the
// phone service down.
func (p *Proxy) signCall(fwd *sip.Request, rc *reqCtx) {
	s := p.opts.Signer
	if s == nil {
		return
	}
	start := time.Now()
	err := s.SignCall(fwd, rc.line, rc.verdict)
	p.c.signed(time.Since(start), err)
	if err != nil {
		p.log.Error("call not signed; relayed without Identity", "call_id", rc.callID, "err", MaskNumbers(err.Error()))
	}
}

// upstreamDate hands the Date of a response from the upstream to the
// signer, which keeps its tokens on the edge's clock.
func (p *Proxy) upstreamDate(res *sip.Response, at time.Time) {
	if p.opts.Signer == nil {
		return
	}
	if h := res.GetHeader("Date"); h != nil {
		p.opts.Signer.UpstreamDate(h.Value(), at)
	}
}

// upstreamTCPRetry is how long an upstream that refused TCP is sent large
// requests over UDP before TCP is tried again.
const upstreamTCPRetry = 5 * time.Minute

func (p *Proxy) upstreamUDPOnly() bool {
	until := p.udpOnlyUntil.Load()
	return until != 0 && p.now().UnixNano() < until
}

func (p *Proxy) markUpstreamUDPOnly() {
	if p.udpOnlyUntil.Swap(p.now().Add(upstreamTCPRetry).UnixNano()) == 0 {
		p.log.Warn("the upstream does not take TCP: requests over 1,300 bytes (signed INVITEs) go as fragmented UDP; an upstream of tcp:// or tls:// avoids it",
			"upstream", p.opts.Upstream.String())
	}
}
