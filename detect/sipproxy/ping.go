package sipproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// optionsRequest is an OPTIONS to e; its Request-URI names the transport
// when it is not UDP.
func optionsRequest(e Endpoint) *sip.Request {
	uri := sip.Uri{Scheme: "sip", Host: e.Host, Port: e.Port, UriParams: sip.NewParams()}
	if t := strings.ToLower(e.Transport); t != "udp" {
		uri.UriParams.Add("transport", t)
	}
	return sip.NewRequest(sip.OPTIONS, uri)
}

// PingUpstream sends an OPTIONS to the upstream from the agent's own
// upstream socket and returns the final status and the round trip: what
// the status page shows as "the upstream answers".
func (p *Proxy) PingUpstream(ctx context.Context) (status int, rtt time.Duration, err error) {
	up := p.opts.Upstream
	req := optionsRequest(up)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "leadport-agent", Host: p.up.host}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: *req.Recipient.Clone(), Params: sip.NewParams()})
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

// Ping sends one OPTIONS to e at ip (e's host, resolved by the caller) from
// a user agent of its own, named userAgent, not from a proxy's sockets: how
// `leadport-agent doctor` asks the edge whether it answers, agent running or
// not. sipgo's client retransmits over UDP as RFC 3261 asks; Ping returns
// the final answer and the time it took. What sipgo's layers log goes
// nowhere; its package logger (sip.SetDefaultLogger) is the caller's to set.
func Ping(ctx context.Context, e Endpoint, ip, userAgent string) (*sip.Response, time.Duration, error) {
	ua, cli, err := oneShotClient(e, ip, userAgent)
	if err != nil {
		return nil, 0, err
	}
	defer ua.Close()
	req := optionsRequest(e)
	req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	start := time.Now()
	res, err := cli.Do(ctx, req)
	if err != nil {
		return nil, 0, err
	}
	return res, time.Since(start), nil
}

// oneShotClient is a user agent of its own, quiet, for one request to e
// at ip from this host's address on the route there (Ping, ProbePath).
// The caller closes the user agent.
func oneShotClient(e Endpoint, ip, userAgent string) (*sipgo.UserAgent, *sipgo.Client, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	host := sourceAddr(net.JoinHostPort(ip, strconv.Itoa(e.Port)))
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(userAgent),
		sipgo.WithUserAgentHostname(host),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)),
	)
	if err != nil {
		return nil, nil, err
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientLogger(quiet), sipgo.WithClientNAT())
	if err != nil {
		ua.Close()
		return nil, nil, err
	}
	return ua, cli, nil
}

// sourceAddr is this host's address on the route to addr (for Via and
// From); nothing is sent.
func sourceAddr(addr string) string {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	h, _, _ := net.SplitHostPort(c.LocalAddr().String())
	return h
}
