package sipproxy

import (
	"bytes"

	"github.com/emiago/sipgo/sip"
)

// peeked is what the gate reads of a datagram from an unknown source
// without parsing it as SIP: enough to tell what the source tries.
type peeked struct {
	response  bool
	method    string // of a request; "" when not a token
	toUser    []byte // user part of the To URI; aliases data
	userAgent []byte // aliases data
	scanner   bool   // the User-Agent names a scanning tool
}

// peekLimit is how much of a datagram peek looks at: the request line and
// the usual headers fit; a scanner gains nothing by sending more.
const peekLimit = 2048

// peek reads the start line, To and User-Agent (long or compact form) of
// a SIP message. Anything it cannot make sense of is left empty; it never
// fails.
func peek(data []byte) peeked {
	var pk peeked
	if len(data) > peekLimit {
		data = data[:peekLimit]
	}
	line, rest := cutLine(data)
	if bytes.HasPrefix(line, []byte("SIP/2.0 ")) {
		pk.response = true
	} else if sp := bytes.IndexByte(line, ' '); sp > 0 && sp <= 16 && isToken(line[:sp]) {
		pk.method = string(line[:sp])
	}
	for len(rest) > 0 {
		line, rest = cutLine(rest)
		if len(line) == 0 {
			break // end of headers
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("to")) || bytes.EqualFold(name, []byte("t")):
			if pk.toUser == nil {
				pk.toUser = uriUser(value)
			}
		case bytes.EqualFold(name, []byte("user-agent")):
			if pk.userAgent == nil {
				pk.userAgent = value
				pk.scanner = isScanner(value)
			}
		}
	}
	return pk
}

// peekParsed is peek for a request sipgo parsed (TCP and TLS).
func peekParsed(req *sip.Request) peeked {
	pk := peeked{method: string(req.Method)}
	if to := req.To(); to != nil {
		pk.toUser = []byte(to.Address.User)
	}
	if h := req.GetHeader("User-Agent"); h != nil {
		pk.userAgent = []byte(h.Value())
		pk.scanner = isScanner(pk.userAgent)
	}
	return pk
}

func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.TrimSuffix(b, []byte("\r")), nil
	}
	return bytes.TrimSuffix(b[:i], []byte("\r")), b[i+1:]
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return len(b) > 0
}

// uriUser returns the user part of the first sip:, sips: or tel: URI in a
// header value ("Name" <sip:user@host>;tag=x), or nil.
func uriUser(v []byte) []byte {
	i, n := -1, 0
	for _, scheme := range []string{"sip:", "sips:", "tel:"} {
		if j := indexFold(v, scheme); j >= 0 && (i < 0 || j < i) {
			i, n = j, len(scheme)
		}
	}
	if i < 0 {
		return nil
	}
	tel := n == len("tel:") && (v[i] == 't' || v[i] == 'T')
	u := v[i+n:]
	if end := bytes.IndexAny(u, ">;? \t,"); end >= 0 {
		u = u[:end]
	}
	if tel {
		return u
	}
	at := bytes.IndexByte(u, '@')
	if at <= 0 {
		return nil // no user part
	}
	return u[:at]
}

// indexFold is the index of the ASCII word w in b, any case; bytes that
// are not ASCII never match (and, unlike bytes.ToLower, keep their
// offsets).
func indexFold(b []byte, w string) int {
	for i := 0; i+len(w) <= len(b); i++ {
		j := 0
		for j < len(w) && b[i+j]|0x20 == w[j]|0x20 && (w[j] != ':' || b[i+j] == ':') {
			j++
		}
		if j == len(w) {
			return i
		}
	}
	return -1
}

// scannerAgents are User-Agent words of SIP scanning and cracking tools:
// sipvicious (svmap, svwar, svcrack: "friendly-scanner" by default), sipcli,
// SIPVicious PRO, sundayddr, iWar, pplsip, VaxSIPUserAgent, SIPScan, smap.
var scannerAgents = []string{
	"friendly-scanner", "sipvicious", "sipcli", "sundayddr", "iwar", "pplsip",
	"vaxsipuseragent", "sipscan", "sip-scan", "smap", "sivus", "voip-scan",
}

func isScanner(ua []byte) bool {
	l := bytes.ToLower(ua)
	for _, s := range scannerAgents {
		if bytes.Contains(l, []byte(s)) {
			return true
		}
	}
	return false
}
