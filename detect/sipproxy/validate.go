package sipproxy

import (
	"net"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// singletons are the headers a request carries once (RFC 3261 7.3.1, 20):
// two of them make the request ambiguous, and a second Max-Forwards would
// defeat loop protection. Keyed by sipgo's canonical lower-case names.
var singletons = map[string]int{"from": 0, "to": 1, "call-id": 2, "cseq": 3, "max-forwards": 4, "content-length": 5}

// validateRequest is RFC 3261 16.3's request validation, on what sipgo
// parsed: it returns the status to answer with, or 0 to relay. Max-Forwards
// is checked by the caller (483, or OPTIONS answered).
func validateRequest(req *sip.Request) (int, string, sip.Header) {
	if req.SipVersion != "SIP/2.0" {
		return sip.StatusVersionNotSupported, "Version Not Supported", nil
	}
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips", "tel":
	default:
		return 416, "Unsupported URI Scheme", nil
	}
	if len(req.Recipient.Headers) > 0 {
		return sip.StatusBadRequest, "Request-URI Carries Headers", nil
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil || req.Via() == nil {
		return sip.StatusBadRequest, "Missing Mandatory Header", nil
	}
	if !strings.EqualFold(string(req.CSeq().MethodName), string(req.Method)) {
		return sip.StatusBadRequest, "CSeq Method Mismatch", nil
	}
	// One pass over the headers, without allocating: this runs for every
	// request.
	var seen [6]bool
	var unsupported []string
	for _, h := range req.Headers() {
		name := sip.HeaderToLower(h.Name())
		if i, ok := singletons[name]; ok {
			if seen[i] {
				return sip.StatusBadRequest, "Duplicate " + h.Name(), nil
			}
			seen[i] = true
			continue
		}
		if name == "proxy-require" {
			// This proxy implements no extension a Proxy-Require could name.
			for _, tag := range strings.Split(h.Value(), ",") {
				if tag = strings.TrimSpace(tag); tag != "" {
					unsupported = append(unsupported, tag)
				}
			}
		}
	}
	if len(unsupported) > 0 {
		return sip.StatusBadExtension, "Bad Extension", sip.NewHeader("Unsupported", strings.Join(unsupported, ", "))
	}
	return 0, "", nil
}

// restoreMethod undoes sipgo's upper-casing of the request line: methods
// are case-sensitive (RFC 3261 7.1), and the next hop compares the request
// line with the CSeq, which sipgo leaves as sent.
func restoreMethod(fwd *sip.Request) {
	if cs := fwd.CSeq(); cs != nil && string(cs.MethodName) != string(fwd.Method) &&
		strings.EqualFold(string(cs.MethodName), string(fwd.Method)) {
		fwd.Method = cs.MethodName
	}
}

// routable reports whether a response may be sent to host: never to a
// broadcast, multicast or unspecified address (RFC 4475 3.3.10).
func routable(host string) bool {
	ip := net.ParseIP(bareHost(host))
	if ip == nil {
		return host != ""
	}
	return !ip.IsUnspecified() && !ip.IsMulticast() && !ip.Equal(net.IPv4bcast)
}

// responseToFirst answers req from the first of each header the sender
// matches a response by: sipgo's accessors return the last of duplicated
// headers, and a sender writes the ones it means first.
func responseToFirst(req *sip.Request, status int, reason string) *sip.Response {
	res := sip.NewResponse(status, reason)
	for _, v := range req.GetHeaders("Via") {
		res.AppendHeader(sip.HeaderClone(v))
	}
	for _, name := range []string{"From", "To", "Call-ID", "CSeq"} {
		if hs := req.GetHeaders(name); len(hs) > 0 {
			h := sip.HeaderClone(hs[0])
			if to, ok := h.(*sip.ToHeader); ok && !to.Params.Has("tag") {
				to.Params.Add("tag", sip.GenerateTagN(10))
			}
			res.AppendHeader(h)
		}
	}
	res.SetBody(nil)
	res.SetTransport(req.Transport())
	return res
}
