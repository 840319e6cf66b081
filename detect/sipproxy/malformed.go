package sipproxy

import (
	"bytes"
	"net"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// readFilter sees every datagram and stream chunk before sipgo parses it.
// sipgo drops a UDP request it cannot parse without a word, and the sender
// retransmits for half a minute; here such a request gets a 400 (RFC 3261
// 16.3) built from the headers that can be salvaged, a broken response is
// dropped, and both are counted. Stream chunks are not messages, so TCP is
// left to sipgo's stream parser (its failures are counted from its log).
func (p *Proxy) readFilter(s *side, info sip.TransportReadProps, data []byte) []byte {
	p.c.bytesIn.Add(uint64(len(data)))
	if !strings.EqualFold(info.Transport, "udp") || len(bytes.Trim(data, "\r\n")) == 0 {
		return data
	}
	if _, err := s.parser.ParseSIP(data); err == nil {
		return data
	}
	if bytes.HasPrefix(data, []byte("SIP/")) {
		p.c.badResps.Add(1)
		return nil
	}
	p.c.parseErrs.Add(1)
	reply := badRequest(data)
	if reply == nil {
		return nil
	}
	if c, ok := s.udpConns.Load(info.LocalAddr.String()); ok {
		if _, err := c.(net.PacketConn).WriteTo(reply, info.RemoteAddr); err != nil {
			p.log.Debug("400 not sent", "err", err)
		}
	}
	p.c.response(sip.StatusBadRequest)
	return nil
}

// salvage are the header names (full and compact) a 400 copies back so the
// sender can match it to its transaction.
var salvage = map[string]bool{
	"via": true, "v": true, "from": true, "f": true, "to": true, "t": true,
	"call-id": true, "i": true, "cseq": true,
}

// badRequest builds a 400 for a request that failed to parse, or nil when
// too little of it makes sense to answer (no request line or no Via).
func badRequest(data []byte) []byte {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	lines := strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n")
	if len(lines) == 0 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "SIP/2.0") {
		return nil
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 400 Bad Request\r\n")
	hasVia, hasTo := false, false
	for i := 1; i < len(lines); i++ {
		l := lines[i]
		name, _, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n := strings.ToLower(strings.TrimSpace(name))
		if !salvage[n] {
			continue
		}
		if n == "via" || n == "v" {
			hasVia = true
		}
		if n == "to" || n == "t" {
			hasTo = true
			if !strings.Contains(strings.ToLower(l), "tag=") {
				l += ";tag=lp400"
			}
		}
		b.WriteString(strings.TrimRight(l, " \t"))
		b.WriteString("\r\n")
	}
	if !hasVia || !hasTo {
		return nil
	}
	b.WriteString("Warning: 399 leadport-agent \"malformed request\"\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String())
}
