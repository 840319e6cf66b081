package capture

import (
	"container/list"
	"encoding/binary"
	"net/netip"
	"time"
)

// decoder holds the state of one read: fragments and TCP flows in
// reassembly, and the messages found.
type decoder struct {
	opts  Options
	stats Stats
	out   []Message

	at    time.Time // of the frame being decoded
	frame int

	// frags are IP datagrams in reassembly; flows are TCP flows. Both sit
	// on one LRU list so that MaxFlows bounds them together.
	frags map[fragKey]*list.Element
	flows map[flowKey]*list.Element
	lru   *list.List
	// sctp are SCTP user messages split over chunks, being gathered;
	// at most MaxFlows.
	sctpParts map[flowKey]*sctpPart
}

func newDecoder(opts Options) *decoder {
	return &decoder{opts: opts, frags: map[fragKey]*list.Element{}, flows: map[flowKey]*list.Element{}, lru: list.New(), sctpParts: map[flowKey]*sctpPart{}}
}

// maxDepth bounds tunnels inside tunnels (GRE in IP in IP ...): real
// captures have one or two levels, a crafted one could have hundreds.
const maxDepth = 4

// EtherTypes and IP protocols the decoder follows.
const (
	etIPv4     = 0x0800
	etIPv6     = 0x86dd
	etVLAN     = 0x8100
	etQinQ     = 0x88a8
	etVLANOld  = 0x9100
	etERSPAN2  = 0x88be
	etERSPAN3  = 0x22eb
	etTEB      = 0x6558 // transparent Ethernet bridging (GRE)
	protoIPIP  = 4
	protoTCP   = 6
	protoUDP   = 17
	protoIPv6  = 41
	protoGRE   = 47
	protoSCTP  = 132
	protoFrag6 = 44
)

func (d *decoder) ethernet(b []byte, depth int) bool {
	if len(b) < 14 {
		return false
	}
	return d.ethertype(binary.BigEndian.Uint16(b[12:]), b[14:], depth)
}

func (d *decoder) ethertype(et uint16, b []byte, depth int) bool {
	// 802.1Q and 802.1ad tags, stacked at most a few deep.
	for i := 0; i < 4 && (et == etVLAN || et == etQinQ || et == etVLANOld); i++ {
		if len(b) < 4 {
			return false
		}
		et, b = binary.BigEndian.Uint16(b[2:]), b[4:]
	}
	switch et {
	case etIPv4, etIPv6:
		return d.ip(b, depth)
	}
	return false
}

// ip decodes an IPv4 or IPv6 packet, by its version nibble.
func (d *decoder) ip(b []byte, depth int) bool {
	if len(b) < 1 || depth > maxDepth {
		return false
	}
	switch b[0] >> 4 {
	case 4:
		return d.ipv4(b, depth)
	case 6:
		return d.ipv6(b, depth)
	}
	return false
}

func (d *decoder) ipv4(b []byte, depth int) bool {
	if len(b) < 20 {
		return false
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if hl < 20 || total < hl || len(b) < hl {
		return false
	}
	// Ethernet pads short frames; a snap length cuts long ones. Keep what
	// is there of the datagram.
	if total < len(b) && total > 0 {
		b = b[:total]
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	proto := b[9]
	ff := binary.BigEndian.Uint16(b[6:])
	more, off := ff&0x2000 != 0, int(ff&0x1fff)*8
	payload := b[hl:]
	if more || off > 0 {
		key := fragKey{src: src, dst: dst, id: uint32(binary.BigEndian.Uint16(b[4:])), proto: proto}
		whole, done := d.fragment(key, off, more, payload)
		if !done {
			return true
		}
		payload = whole
	}
	return d.transport(proto, src, dst, payload, depth)
}

func (d *decoder) ipv6(b []byte, depth int) bool {
	if len(b) < 40 {
		return false
	}
	if pl := int(binary.BigEndian.Uint16(b[4:])); pl+40 < len(b) && pl > 0 {
		b = b[:40+pl]
	}
	src := netip.AddrFrom16([16]byte(b[8:24]))
	dst := netip.AddrFrom16([16]byte(b[24:40]))
	next, p := b[6], b[40:]
	// Extension headers: hop-by-hop, routing, destination options, AH and
	// the fragment header.
	for i := 0; i < 8; i++ {
		switch next {
		case 0, 43, 60:
			if len(p) < 8 {
				return false
			}
			n := (int(p[1]) + 1) * 8
			if len(p) < n {
				return false
			}
			next, p = p[0], p[n:]
			continue
		case 51:
			if len(p) < 8 {
				return false
			}
			n := (int(p[1]) + 2) * 4
			if len(p) < n {
				return false
			}
			next, p = p[0], p[n:]
			continue
		case protoFrag6:
			if len(p) < 8 {
				return false
			}
			fo := binary.BigEndian.Uint16(p[2:])
			key := fragKey{src: src, dst: dst, id: binary.BigEndian.Uint32(p[4:]), proto: p[0], v6: true}
			whole, done := d.fragment(key, int(fo&0xfff8), fo&1 != 0, p[8:])
			if !done {
				return true
			}
			next, p = p[0], whole
			continue
		}
		break
	}
	return d.transport(next, src, dst, p, depth)
}

// transport hands the payload of an IP packet on: to UDP, TCP, SCTP, or
// into the tunnel it carries.
func (d *decoder) transport(proto byte, src, dst netip.Addr, b []byte, depth int) bool {
	switch proto {
	case protoUDP:
		if len(b) < 8 {
			return false
		}
		if n := int(binary.BigEndian.Uint16(b[4:])); n >= 8 && n < len(b) {
			b = b[:n]
		}
		sp, dp := binary.BigEndian.Uint16(b[0:]), binary.BigEndian.Uint16(b[2:])
		d.datagram(netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp), UDP, b[8:])
		return true
	case protoTCP:
		if len(b) < 20 {
			return false
		}
		off := int(b[12]>>4) * 4
		if off < 20 || len(b) < off {
			return false
		}
		seg := segment{
			src:   netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[0:])),
			dst:   netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[2:])),
			seq:   binary.BigEndian.Uint32(b[4:]),
			flags: b[13],
			data:  b[off:],
		}
		d.tcp(seg)
		return true
	case protoSCTP:
		return d.sctp(src, dst, b)
	case protoIPIP, protoIPv6:
		return d.ip(b, depth+1)
	case protoGRE:
		return d.gre(b, depth+1)
	}
	return false
}

// gre unwraps GRE (RFC 2784/2890), and the ERSPAN mirror sessions that
// switches send over it (types I, II and III).
func (d *decoder) gre(b []byte, depth int) bool {
	if len(b) < 4 || depth > maxDepth {
		return false
	}
	flags := binary.BigEndian.Uint16(b)
	et := binary.BigEndian.Uint16(b[2:])
	n := 4
	if flags&0x8000 != 0 { // checksum present
		n += 4
	}
	if flags&0x2000 != 0 { // key present
		n += 4
	}
	seq := flags&0x1000 != 0
	if seq {
		n += 4
	}
	if len(b) < n {
		return false
	}
	b = b[n:]
	switch et {
	case etERSPAN2:
		// Type I has no sequence number and no ERSPAN header; type II an
		// 8-byte header.
		if seq {
			if len(b) < 8 {
				return false
			}
			b = b[8:]
		}
		return d.ethernet(b, depth)
	case etERSPAN3:
		// 12 bytes, and an 8-byte platform sub-header when O is set.
		if len(b) < 12 {
			return false
		}
		o := b[11]&0x01 != 0
		b = b[12:]
		if o {
			if len(b) < 8 {
				return false
			}
			b = b[8:]
		}
		return d.ethernet(b, depth)
	case etTEB:
		return d.ethernet(b, depth)
	case etIPv4, etIPv6:
		return d.ip(b, depth)
	}
	return false
}

// sctp takes the DATA chunks of an SCTP packet (RFC 9260 3.3.1). SIP over
// SCTP (RFC 4168) sends one message per user message.
func (d *decoder) sctp(src, dst netip.Addr, b []byte) bool {
	if len(b) < 12 {
		return false
	}
	s := netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[0:]))
	t := netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[2:]))
	b = b[12:]
	for len(b) >= 4 {
		typ, flags := b[0], b[1]
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < 4 || n > len(b) {
			return true
		}
		if typ == 0 && n >= 16 {
			d.sctpData(flowKey{s, t}, flags, binary.BigEndian.Uint32(b[4:]), b[16:n])
		}
		n = (n + 3) &^ 3
		if n > len(b) {
			break
		}
		b = b[n:]
	}
	return true
}

// sctpPart is a user message split over DATA chunks, being gathered.
type sctpPart struct {
	next uint32 // the TSN expected next
	data []byte
}

// sctpData takes one DATA chunk: a whole user message (B and E set), or a
// piece of one, gathered in TSN order per direction of the association.
// Pieces out of order (a lost chunk, a retransmission) drop the message
// and are counted: a sender on one stream sends them in order.
func (d *decoder) sctpData(k flowKey, flags byte, tsn uint32, data []byte) {
	const first, last = 0x02, 0x01
	if flags&first != 0 && flags&last != 0 {
		d.datagram(k.src, k.dst, SCTP, data)
		return
	}
	p := d.sctpParts[k]
	switch {
	case flags&first != 0:
		if p != nil {
			d.stats.SCTPFragmented++
		}
		if p == nil && len(d.sctpParts) >= d.opts.MaxFlows {
			d.stats.SCTPFragmented += len(d.sctpParts)
			clear(d.sctpParts)
		}
		d.sctpParts[k] = &sctpPart{next: tsn + 1, data: append([]byte(nil), data...)}
		return
	case p == nil:
		d.stats.SCTPFragmented++
		return
	case tsn != p.next || len(p.data)+len(data) > d.opts.MaxMessage:
		d.stats.SCTPFragmented++
		delete(d.sctpParts, k)
		return
	}
	p.data = append(p.data, data...)
	p.next++
	if flags&last != 0 {
		delete(d.sctpParts, k)
		d.datagram(k.src, k.dst, SCTP, p.data)
	}
}

// datagram is a UDP or SCTP payload: one SIP message, a HEP3 envelope,
// or something else.
func (d *decoder) datagram(src, dst netip.AddrPort, tr Transport, b []byte) {
	if isHEP3(b) {
		d.hep3(b)
		return
	}
	b = trimCRLF(b)
	if len(b) == 0 || len(b) > d.opts.MaxMessage {
		return
	}
	if ok, _ := startLine(b); !ok {
		return
	}
	// A datagram holds one message; the Content-Length, when present,
	// says where it ends (RFC 3261 18.3), trailing bytes are dropped.
	d.emit(src, dst, tr, false, trimDatagram(b))
}

func (d *decoder) emit(src, dst netip.AddrPort, tr Transport, hep bool, b []byte) {
	d.out = append(d.out, Message{At: d.at, Frame: d.frame, Src: src, Dst: dst, Transport: tr, HEP: hep, Data: append([]byte(nil), b...)})
}

// IP fragment reassembly (RFC 791, RFC 8200 4.5).

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    byte
	v6       bool
}

type fragPart struct {
	off  int
	data []byte
}

type fragState struct {
	key   fragKey
	parts []fragPart
	size  int // bytes held
	total int // the datagram's length, once its last fragment came
	first time.Time
}

// fragTimeout drops an incomplete datagram after this much capture time,
// as a host would (RFC 8200 4.5: 60 s).
const fragTimeout = 60 * time.Second

// fragment takes one fragment; done reports a whole datagram, returned.
func (d *decoder) fragment(k fragKey, off int, more bool, data []byte) (whole []byte, done bool) {
	d.stats.Fragments++
	var st *fragState
	if e, ok := d.frags[k]; ok {
		st = e.Value.(*fragState)
		if d.at.Sub(st.first) > fragTimeout {
			d.dropFrag(e)
			d.stats.FragmentsDropped++
			st = nil
		} else {
			d.lru.MoveToFront(e)
		}
	}
	if st == nil {
		st = &fragState{key: k, first: d.at}
		d.frags[k] = d.lru.PushFront(st)
		d.evict()
	}
	if off+len(data) > 65535 || st.size+len(data) > 65535 {
		d.dropFrag(d.frags[k])
		d.stats.FragmentsDropped++
		return nil, false
	}
	st.parts = append(st.parts, fragPart{off: off, data: append([]byte(nil), data...)})
	st.size += len(data)
	if !more {
		st.total = off + len(data)
	}
	if st.total == 0 {
		return nil, false
	}
	// Whole when the parts cover 0..total; overlaps take the first copy.
	buf := make([]byte, st.total)
	have := make([]bool, st.total)
	covered := 0
	for _, p := range st.parts {
		for i := range p.data {
			if j := p.off + i; j < st.total && !have[j] {
				have[j] = true
				buf[j] = p.data[i]
				covered++
			}
		}
	}
	if covered < st.total {
		return nil, false
	}
	d.dropFrag(d.frags[k])
	d.stats.Reassembled++
	return buf, true
}

func (d *decoder) dropFrag(e *list.Element) {
	st := e.Value.(*fragState)
	delete(d.frags, st.key)
	d.lru.Remove(e)
}

// evict keeps fragments and flows within MaxFlows, dropping the least
// recently used.
func (d *decoder) evict() {
	for d.lru.Len() > d.opts.MaxFlows {
		e := d.lru.Back()
		switch v := e.Value.(type) {
		case *fragState:
			d.dropFrag(e)
			d.stats.FragmentsDropped++
		case *flow:
			d.closeFlow(v)
			d.stats.FlowsEvicted++
		}
	}
}
