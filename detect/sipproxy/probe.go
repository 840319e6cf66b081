package sipproxy

import (
	"context"
	"net"
	"strconv"

	"github.com/emiago/sipgo/sip"
)

// ProbePath asks the registrar at e (reached at ip) whether it takes a Path
// (RFC 3327), as `leadport-agent doctor` does before any phone registers.
// The REGISTER only queries the bindings of user (no Contact: RFC 3261
// 10.2.3, nothing changes at the registrar) and carries what the agent
// adds in path mode: a Path naming this host and Supported: path. The
// answer says it: a 2xx that echoes the Path takes it, a 2xx without it
// ignores it, 420 with Unsupported: path refuses it; a registrar that
// challenges first (401, 407) tells nothing until a phone registers with
// credentials, which the agent then watches (Proxy.RegisterModeInForce).
func ProbePath(ctx context.Context, e Endpoint, ip, user, userAgent string) (*sip.Response, error) {
	ua, cli, err := oneShotClient(e, ip, userAgent)
	if err != nil {
		return nil, err
	}
	defer ua.Close()
	uri := sip.Uri{Scheme: "sip", Host: e.Host, Port: e.Port, UriParams: sip.NewParams()}
	if e.Transport != "udp" {
		uri.UriParams.Add("transport", e.Transport)
	}
	req := sip.NewRequest(sip.REGISTER, uri)
	aor := sip.Uri{Scheme: "sip", User: user, Host: e.Host}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Path", "<sip:"+sipHost(sourceAddr(net.JoinHostPort(ip, strconv.Itoa(e.Port))))+";lr>"))
	req.AppendHeader(sip.NewHeader("Supported", "path"))
	req.AppendHeader(sip.NewHeader("Content-Length", "0"))
	return cli.Do(ctx, req)
}

// sipHost brackets an IPv6 address for a SIP URI.
func sipHost(h string) string {
	if ip := net.ParseIP(h); ip != nil && ip.To4() == nil {
		return "[" + h + "]"
	}
	return h
}
