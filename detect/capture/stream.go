package capture

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// TCP reassembly. Each direction of a connection is its own flow: bytes
// are taken in sequence order (retransmissions and overlaps trimmed,
// segments that come early held until the gap fills), and the in-order
// bytes are cut into SIP messages by Content-Length (RFC 3261 18.3), or
// into WebSocket frames once the connection was upgraded (RFC 7118).

type flowKey struct{ src, dst netip.AddrPort }

type segment struct {
	src, dst netip.AddrPort
	seq      uint32
	flags    byte
	data     []byte
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
)

type held struct {
	seq  uint32
	data []byte
}

type flow struct {
	key    flowKey
	next   uint32 // the next sequence number expected
	synced bool
	buf    []byte // in-order bytes not yet cut into messages
	early  []held // segments past a gap, waiting for it
	held   int    // bytes in early
	ws     bool   // upgraded to WebSocket: buf holds frames
	wsMsg  []byte // a fragmented WebSocket message being gathered
	// sip: the flow carried SIP (or a WebSocket upgrade); only such flows
	// count their lost bytes. skipped counts the bytes of a flow that
	// never did; past notSIP of them the flow is ignored, so a capture's
	// web or database traffic costs no further scanning.
	sip     bool
	skipped int
	ignore  bool
}

// notSIP is how many bytes a TCP flow may show without a SIP start line
// before the reader stops looking at it.
const notSIP = 64 << 10

// seqLess compares sequence numbers modulo 2^32 (RFC 9293 3.4).
func seqLess(a, b uint32) bool { return int32(a-b) < 0 }

func (d *decoder) tcp(s segment) {
	k := flowKey{s.src, s.dst}
	var f *flow
	if e, ok := d.flows[k]; ok {
		f = e.Value.(*flow)
		d.lru.MoveToFront(e)
	} else {
		if len(s.data) == 0 && s.flags&tcpSYN == 0 {
			return // a bare ACK of a flow with nothing to read yet
		}
		f = &flow{key: k}
		d.flows[k] = d.lru.PushFront(f)
		d.evict()
	}
	seq := s.seq
	if s.flags&tcpSYN != 0 {
		seq++ // the SYN takes one sequence number
		if !f.synced || len(f.buf) == 0 && f.held == 0 {
			f.next, f.synced = seq, true
		}
	}
	if !f.synced {
		// Picked up mid-connection: start where the capture starts.
		f.next, f.synced = seq, true
	}
	if len(s.data) > 0 && !f.ignore {
		d.take(f, seq, s.data)
	}
	if s.flags&(tcpFIN|tcpRST) != 0 {
		d.closeFlow(f)
	}
}

// take adds a segment's payload to the flow.
func (d *decoder) take(f *flow, seq uint32, data []byte) {
	end := seq + uint32(len(data))
	switch {
	case !seqLess(f.next, end):
		return // all seen before: a retransmission
	case seqLess(f.next, seq):
		// Past a gap: hold it, within the flow's cap.
		if len(f.buf)+f.held+len(data) > d.opts.MaxFlowBuffer {
			d.skipGap(f)
			if seqLess(f.next, seq) {
				// Still past what is held: the missing bytes are lost.
				d.lose(f, int(seq-f.next))
				f.next = seq
			}
			d.take(f, seq, data)
			return
		}
		f.early = append(f.early, held{seq: seq, data: append([]byte(nil), data...)})
		f.held += len(data)
		return
	}
	// Overlaps what came before: keep the new part.
	data = data[f.next-seq:]
	d.append(f, data)
	f.next += uint32(len(data))
	d.drainEarly(f)
	d.cut(f)
}

// drainEarly moves held segments that the new bytes reached into buf.
func (d *decoder) drainEarly(f *flow) {
	for moved := true; moved && len(f.early) > 0; {
		moved = false
		kept := f.early[:0]
		for _, h := range f.early {
			end := h.seq + uint32(len(h.data))
			switch {
			case !seqLess(f.next, end):
				f.held -= len(h.data) // wholly before next: drop
			case !seqLess(f.next, h.seq):
				f.held -= len(h.data)
				rest := h.data[f.next-h.seq:]
				d.append(f, rest)
				f.next += uint32(len(rest))
				moved = true
			default:
				kept = append(kept, h)
			}
		}
		f.early = kept
	}
}

// skipGap gives up on the missing bytes before the earliest held segment:
// what is in buf cannot be completed, and the flow picks up again at the
// next start line.
func (d *decoder) skipGap(f *flow) {
	if len(f.early) == 0 {
		d.lose(f, len(f.buf))
		f.buf = f.buf[:0]
		return
	}
	first := f.early[0].seq
	for _, h := range f.early[1:] {
		if seqLess(h.seq, first) {
			first = h.seq
		}
	}
	d.lose(f, len(f.buf)+int(first-f.next))
	f.buf = f.buf[:0]
	f.next = first
	d.drainEarly(f)
	d.cut(f)
}

func (d *decoder) lose(f *flow, n int) {
	if n <= 0 {
		return
	}
	f.wsMsg = f.wsMsg[:0]
	if !f.sip {
		if f.skipped += n; f.skipped > notSIP {
			f.ignore = true
			f.buf, f.early, f.held = nil, nil, 0
		}
		return
	}
	d.stats.TCPResyncs++
	d.stats.TCPBytesDropped += n
}

func (d *decoder) append(f *flow, b []byte) {
	if len(f.buf)+len(b) > d.opts.MaxFlowBuffer {
		// No message fits in the cap: drop what is held and resync.
		d.lose(f, len(f.buf))
		f.buf = f.buf[:0]
		if len(b) > d.opts.MaxFlowBuffer {
			d.lose(f, len(b)-d.opts.MaxFlowBuffer)
			b = b[len(b)-d.opts.MaxFlowBuffer:]
		}
	}
	f.buf = append(f.buf, b...)
}

// closeFlow ends a flow (FIN, RST, eviction, end of file); a message it
// holds incomplete is dropped: it never reached its receiver whole.
func (d *decoder) closeFlow(f *flow) {
	if e, ok := d.flows[f.key]; ok {
		d.lru.Remove(e)
		delete(d.flows, f.key)
	}
}

// flush ends the read: incomplete messages stay unreported, and the
// datagrams still missing fragments count as given up.
func (d *decoder) flush() {
	for _, e := range d.flows {
		d.lru.Remove(e)
	}
	clear(d.flows)
	d.stats.FragmentsDropped += len(d.frags)
	for _, e := range d.frags {
		d.lru.Remove(e)
	}
	clear(d.frags)
}

// cut takes the complete messages off the front of the flow's buffer.
func (d *decoder) cut(f *flow) {
	for len(f.buf) > 0 {
		var n int
		if f.ws {
			n = d.wsFrame(f)
		} else {
			n = d.sipOrHTTP(f)
		}
		if n == 0 || f.ignore {
			break
		}
		f.buf = f.buf[n:]
	}
	// Keep the buffer's memory from creeping forward without bound.
	if len(f.buf) == 0 {
		f.buf = f.buf[:0:cap(f.buf)]
		if cap(f.buf) > 64<<10 {
			f.buf = nil
		}
	}
}

// sipOrHTTP takes one SIP message, CRLF keep-alives, a HEP3 envelope, or
// the HTTP upgrade of a WebSocket, off the front of buf; it returns the bytes consumed (0:
// wait for more).
func (d *decoder) sipOrHTTP(f *flow) int {
	b := f.buf
	if n := len(b) - len(trimCRLF(b)); n > 0 {
		return n
	}
	if isHEP3(b) {
		// HEP3 over TCP: each envelope says its length.
		n := int(binary.BigEndian.Uint16(b[4:]))
		switch {
		case n < hepChunkHdr:
			d.lose(f, 4)
			return 4
		case n > len(b):
			return 0
		}
		f.sip = true
		d.hep3(b[:n])
		return n
	}
	if bytes.HasPrefix(b, []byte("GET ")) || bytes.HasPrefix(b, []byte("HTTP/1.")) {
		end := bytes.Index(b, []byte("\r\n\r\n"))
		if end < 0 {
			if len(b) > d.opts.MaxMessage {
				d.lose(f, len(b))
				return len(b)
			}
			return 0
		}
		if hasToken(b[:end], "upgrade", "websocket") {
			f.ws, f.sip = true, true
		}
		return end + 4
	}
	ok, complete := startLine(b)
	if ok {
		f.sip = true
	}
	if !ok {
		if !complete {
			return 0 // the start line is still coming
		}
		// Not a message start: skip to the next line that starts one.
		skip := resync(b)
		d.lose(f, skip)
		return skip
	}
	n, known := messageLen(b, d.opts.MaxMessage)
	switch {
	case !known:
		return 0
	case n < 0:
		// Too large or without a usable Content-Length: skip its start
		// line and look for the next message.
		skip := bytes.Index(b, []byte("\r\n")) + 2
		d.lose(f, skip)
		return skip
	case n > len(b):
		return 0
	}
	f.sip = true
	d.emit(f.key.src, f.key.dst, TCP, false, b[:n])
	return n
}

// resync returns how far to skip to the next line that starts a SIP
// message (or an HTTP request or response), keeping a possibly partial
// last line.
func resync(b []byte) int {
	i := 0
	for {
		j := bytes.Index(b[i:], []byte("\r\n"))
		if j < 0 {
			// Keep the last line: it may be a start line still coming.
			if k := bytes.LastIndexByte(b, '\n'); k >= 0 {
				return k + 1
			}
			if len(b) > 2048 {
				return len(b)
			}
			return max(i, 1)
		}
		i += j + 2
		if i >= len(b) {
			return i
		}
		rest := b[i:]
		if ok, complete := startLine(rest); ok || !complete || bytes.HasPrefix(rest, []byte("HTTP/1.")) || bytes.HasPrefix(rest, []byte("GET ")) {
			return i
		}
	}
}

// hasToken reports whether an HTTP header block has the header name with
// the token in its value (case-insensitive).
func hasToken(hdr []byte, name, token string) bool {
	for _, line := range bytes.Split(hdr, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) &&
			bytes.Contains(bytes.ToLower(v), []byte(token)) {
			return true
		}
	}
	return false
}

// wsFrame takes one WebSocket frame (RFC 6455 5.2) off the front of buf.
// Text and binary messages carry one SIP message each (RFC 7118 5);
// control frames are skipped.
func (d *decoder) wsFrame(f *flow) int {
	b := f.buf
	if len(b) < 2 {
		return 0
	}
	fin, op := b[0]&0x80 != 0, b[0]&0x0f
	masked := b[1]&0x80 != 0
	n, h := int(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return 0
		}
		n, h = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return 0
		}
		l := binary.BigEndian.Uint64(b[2:])
		if l > uint64(d.opts.MaxFlowBuffer) {
			d.lose(f, len(b))
			f.ws = false // lost the framing: look for SIP or HTTP again
			return len(b)
		}
		n, h = int(l), 10
	}
	var key []byte
	if masked {
		if len(b) < h+4 {
			return 0
		}
		key, h = b[h:h+4], h+4
	}
	if len(b) < h+n {
		if h+n > d.opts.MaxFlowBuffer {
			d.lose(f, len(b))
			f.ws = false
			return len(b)
		}
		return 0
	}
	payload := b[h : h+n]
	if masked {
		// Unmask in place: the frame leaves the buffer right after.
		for i := range payload {
			payload[i] ^= key[i&3]
		}
	}
	switch op {
	case 0x1, 0x2, 0x0: // text, binary, continuation
		if op != 0 {
			f.wsMsg = f.wsMsg[:0]
		}
		if len(f.wsMsg)+len(payload) <= d.opts.MaxMessage {
			f.wsMsg = append(f.wsMsg, payload...)
		}
		if fin {
			if m := trimCRLF(f.wsMsg); len(m) > 0 {
				if ok, _ := startLine(m); ok {
					d.emit(f.key.src, f.key.dst, WS, false, m)
				}
			}
			f.wsMsg = f.wsMsg[:0]
		}
	case 0x8: // close
		f.ws = false
	}
	return h + n
}
