package capture

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"time"
)

// SIP is found by content, not by port: captures put it on 5060, 5080,
// 6060, 8080 or wherever the PBX listens.

// maxStartLine bounds the search for the end of a start line.
const maxStartLine = 1024

// startLine reports whether b begins with a SIP request line
// ("INVITE sip:... SIP/2.0") or status line ("SIP/2.0 200 OK"). complete
// says whether b was long enough to tell: false means wait for more.
func startLine(b []byte) (ok, complete bool) {
	if len(b) == 0 {
		return false, false
	}
	if c := b[0]; c < 'A' || c > 'Z' {
		return false, true
	}
	i := bytes.IndexByte(b[:min(len(b), maxStartLine)], '\n')
	if i < 0 {
		return false, len(b) >= maxStartLine
	}
	line := bytes.TrimSuffix(b[:i], []byte("\r"))
	if rest, found := bytes.CutPrefix(line, []byte("SIP/2.0 ")); found {
		return len(rest) >= 3 && digits(rest[:3]) && (len(rest) == 3 || rest[3] == ' '), true
	}
	method, rest, found := bytes.Cut(line, []byte(" "))
	if !found || len(method) == 0 || !bytes.HasSuffix(rest, []byte(" SIP/2.0")) {
		return false, true
	}
	for _, c := range method {
		if (c < 'A' || c > 'Z') && c != '-' && c != '_' {
			return false, true
		}
	}
	return true, true
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// headerEnd returns the length of the start line and headers with the
// blank line after them, or -1 when the blank line has not come yet.
func headerEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return -1
}

// contentLength reads Content-Length (or its compact form "l") from a
// header block; found is false when there is none, n is -1 when its value
// is not a number.
func contentLength(hdr []byte) (n int, found bool) {
	for len(hdr) > 0 {
		line := hdr
		if i := bytes.IndexByte(hdr, '\n'); i >= 0 {
			line, hdr = hdr[:i], hdr[i+1:]
		} else {
			hdr = nil
		}
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if !bytes.EqualFold(name, []byte("Content-Length")) && !bytes.EqualFold(name, []byte("l")) {
			continue
		}
		v, err := strconv.Atoi(string(bytes.TrimSpace(val)))
		if err != nil || v < 0 {
			return -1, true
		}
		return v, true
	}
	return 0, false
}

// messageLen is the length of the message at the front of a stream: its
// headers and Content-Length bytes of body (a stream message without a
// Content-Length has none, RFC 3261 18.3). ok is false while the headers
// are incomplete; n is -1 for a message that cannot be framed (a bad
// length, or longer than max).
func messageLen(b []byte, max int) (n int, ok bool) {
	h := headerEnd(b[:min(len(b), max)])
	if h < 0 {
		if len(b) >= max {
			return -1, true
		}
		return 0, false
	}
	cl, _ := contentLength(b[:h])
	if cl < 0 || h+cl > max {
		return -1, true
	}
	return h + cl, true
}

// trimDatagram cuts a datagram's message to its Content-Length: bytes
// after it are not part of the message (RFC 3261 18.3).
func trimDatagram(b []byte) []byte {
	h := headerEnd(b)
	if h < 0 {
		return b
	}
	if cl, found := contentLength(b[:h]); found && cl >= 0 && h+cl < len(b) {
		return b[:h+cl]
	}
	return b
}

// HEP3 (Homer Encapsulation Protocol v3): capture agents such as heplify
// and Kamailio's siptrace send each packet they saw, with its addresses
// and time, inside a UDP or TCP payload that starts "HEP3".

func isHEP3(b []byte) bool { return len(b) >= 6 && string(b[:4]) == "HEP3" }

// HEP3 chunk types (generic vendor 0).
const (
	hepProto    = 0x02
	hepSrc4     = 0x03
	hepDst4     = 0x04
	hepSrc6     = 0x05
	hepDst6     = 0x06
	hepSrcPort  = 0x07
	hepDstPort  = 0x08
	hepSecs     = 0x09
	hepMicros   = 0x0a
	hepPayType  = 0x0b
	hepPayload  = 0x0f
	hepTypeSIP  = 1
	hepChunkHdr = 6
)

// hep3 emits the SIP message inside a HEP3 envelope.
func (d *decoder) hep3(b []byte) {
	total := int(binary.BigEndian.Uint16(b[4:]))
	if total >= hepChunkHdr && total < len(b) {
		b = b[:total]
	}
	b = b[6:]
	var src, dst netip.Addr
	var sp, dp uint16
	var secs, micros uint32
	var hasTime bool
	payType := byte(hepTypeSIP)
	proto := byte(protoUDP)
	var payload []byte
	for len(b) >= hepChunkHdr {
		vendor := binary.BigEndian.Uint16(b)
		typ := binary.BigEndian.Uint16(b[2:])
		n := int(binary.BigEndian.Uint16(b[4:]))
		if n < hepChunkHdr || n > len(b) {
			return
		}
		v := b[hepChunkHdr:n]
		b = b[n:]
		if vendor != 0 {
			continue
		}
		switch {
		case typ == hepProto && len(v) == 1:
			proto = v[0]
		case typ == hepSrc4 && len(v) == 4:
			src = netip.AddrFrom4([4]byte(v))
		case typ == hepDst4 && len(v) == 4:
			dst = netip.AddrFrom4([4]byte(v))
		case typ == hepSrc6 && len(v) == 16:
			src = netip.AddrFrom16([16]byte(v))
		case typ == hepDst6 && len(v) == 16:
			dst = netip.AddrFrom16([16]byte(v))
		case typ == hepSrcPort && len(v) == 2:
			sp = binary.BigEndian.Uint16(v)
		case typ == hepDstPort && len(v) == 2:
			dp = binary.BigEndian.Uint16(v)
		case typ == hepSecs && len(v) == 4:
			secs, hasTime = binary.BigEndian.Uint32(v), true
		case typ == hepMicros && len(v) == 4:
			micros = binary.BigEndian.Uint32(v)
		case typ == hepPayType && len(v) == 1:
			payType = v[0]
		case typ == hepPayload:
			payload = v
		}
	}
	if payType != hepTypeSIP || len(payload) == 0 || len(payload) > d.opts.MaxMessage {
		return
	}
	payload = trimCRLF(payload)
	if ok, _ := startLine(payload); !ok {
		return
	}
	tr := UDP
	switch proto {
	case protoTCP:
		tr = TCP
	case protoSCTP:
		tr = SCTP
	}
	at := d.at
	if hasTime {
		d.at = time.Unix(int64(secs), int64(micros%1_000_000)*1000).UTC()
	}
	d.emit(netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp), tr, true, trimDatagram(payload))
	d.at = at
}
