package sipproxy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// PingUpstream sends an OPTIONS to the upstream from the agent's own
// upstream socket and returns the final status and the round trip: what
// the status page shows as "the upstream answers".
func (p *Proxy) PingUpstream(ctx context.Context) (status int, rtt time.Duration, err error) {
	up := p.opts.Upstream
	uri := sip.Uri{Scheme: "sip", Host: up.Host, Port: up.Port, UriParams: sip.NewParams()}
	if t := strings.ToLower(up.Transport); t != "udp" {
		uri.UriParams.Add("transport", t)
	}
	req := sip.NewRequest(sip.OPTIONS, uri)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "leadport-agent", Host: p.up.host}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: uri, Params: sip.NewParams()})
	cid := sip.CallIDHeader("ping-" + sip.GenerateTagN(16))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.NewHeader("User-Agent", "leadport-agent"))
	req.AppendHeader(sip.NewHeader("Content-Length", "0"))
	setEndpoint(req, up)
	start := time.Now()
	res, err := p.up.client.Do(ctx, req, p.up.addVia)
	if err != nil {
		return 0, 0, fmt.Errorf("OPTIONS to %s: %w", up.String(), err)
	}
	p.upstreamDate(res, time.Now())
	return res.StatusCode, time.Since(start), nil
}
