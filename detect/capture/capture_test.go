package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	pbx  = ap("192.0.2.10:5060")
	edge = ap("198.51.100.1:5060")
	pbx6 = ap("[2001:db8::10]:5060")
	edg6 = ap("[2001:db8::1]:5060")
)

// want is a message the reader must find: its start line, transport and
// source.
type want struct {
	start string
	tr    Transport
	src   string
}

func got(msgs []Message) []want {
	var out []want
	for _, m := range msgs {
		line, _, _ := bytes.Cut(m.Data, []byte("\r\n"))
		out = append(out, want{string(line), m.Transport, m.Src.String()})
	}
	return out
}

func TestCaptureStreams(t *testing.T) {
	inv := sipMsg("INVITE sip:+15557654321@edge.example SIP/2.0", "c1", 300)
	ok := sipMsg("SIP/2.0 200 OK", "c1", 0)
	bye := sipMsg("BYE sip:+15557654321@edge.example SIP/2.0", "c1", 0)
	big := sipMsg("MESSAGE sip:+15557654321@edge.example SIP/2.0", "c9", 5000)
	wInv := want{"INVITE sip:+15557654321@edge.example SIP/2.0", TCP, pbx.String()}
	wOK := want{"SIP/2.0 200 OK", TCP, pbx.String()}
	wBye := want{"BYE sip:+15557654321@edge.example SIP/2.0", TCP, pbx.String()}
	cases := []struct {
		name   string
		link   uint16
		ng     bool
		opts   Options
		frames []frame
		want   []want
		check  func(t *testing.T, st Stats)
	}{
		{
			name:   "udp over ipv4 and ethernet",
			link:   linkEthernet,
			frames: []frame{{0, ip(pbx, edge, protoUDP, udp(pbx, edge, inv))}},
			want:   []want{{wInv.start, UDP, pbx.String()}},
		},
		{
			name: "udp datagram with bytes past its content-length and a keep-alive",
			link: linkEthernet,
			frames: []frame{
				{0, ip(pbx, edge, protoUDP, udp(pbx, edge, []byte("\r\n\r\n")))},
				{time.Second, ip(pbx, edge, protoUDP, udp(pbx, edge, append(append([]byte("\r\n"), inv...), "junk"...)))},
			},
			want: []want{{wInv.start, UDP, pbx.String()}},
		},
		{
			name: "tcp message across three segments",
			link: linkEthernet,
			frames: []frame{
				{0, ip(pbx, edge, protoTCP, tcp(pbx, edge, 1000, tcpSYN, nil))},
				{1, ip(pbx, edge, protoTCP, tcp(pbx, edge, 1001, 0, inv[:10]))},
				{2, ip(pbx, edge, protoTCP, tcp(pbx, edge, 1011, 0, inv[10:200]))},
				{3, ip(pbx, edge, protoTCP, tcp(pbx, edge, 1201, 0, inv[200:]))},
			},
			want: []want{wInv},
		},
		{
			name: "tcp: two messages and a half in one segment, the rest in the next",
			link: linkEthernet,
			frames: func() []frame {
				s := append(append(append([]byte(nil), inv...), ok...), bye[:20]...)
				return []frame{
					{1, ip(pbx, edge, protoTCP, tcp(pbx, edge, 5, 0, s))},
					{2, ip(pbx, edge, protoTCP, tcp(pbx, edge, 5+uint32(len(s)), 0, bye[20:]))},
				}
			}(),
			want: []want{wInv, wOK, wBye},
		},
		{
			name: "tcp segments out of order and retransmitted",
			link: linkEthernet,
			frames: []frame{
				{1, ip(pbx, edge, protoTCP, tcp(pbx, edge, 100, 0, inv[:50]))},
				{2, ip(pbx, edge, protoTCP, tcp(pbx, edge, 250, 0, inv[150:]))},
				{3, ip(pbx, edge, protoTCP, tcp(pbx, edge, 150, 0, inv[50:150]))},
				{4, ip(pbx, edge, protoTCP, tcp(pbx, edge, 150, 0, inv[50:150]))},
				{5, ip(pbx, edge, protoTCP, tcp(pbx, edge, 100+uint32(len(inv)), 0, ok))},
			},
			want: []want{wInv, wOK},
		},
		{
			name: "tcp picked up mid-message resyncs at the next start line",
			link: linkEthernet,
			frames: []frame{
				{1, ip(pbx, edge, protoTCP, tcp(pbx, edge, 7, 0, append(append([]byte(nil), inv[40:]...), ok...)))},
			},
			want: []want{wOK},
		},
		{
			name: "a message over the flow cap is dropped and the next one found",
			link: linkEthernet,
			opts: Options{MaxFlowBuffer: 2048},
			frames: func() []frame {
				var fs []frame
				s := append(append([]byte(nil), big...), ok...)
				for i := 0; i < len(s); i += 1000 {
					fs = append(fs, frame{time.Duration(i), ip(pbx, edge, protoTCP, tcp(pbx, edge, uint32(i), 0, s[i:min(i+1000, len(s))]))})
				}
				return fs
			}(),
			want: []want{wOK},
			check: func(t *testing.T, st Stats) {
				if st.TCPResyncs == 0 || st.TCPBytesDropped < 5000 {
					t.Errorf("resyncs %d, dropped %d bytes: want the big message counted as dropped", st.TCPResyncs, st.TCPBytesDropped)
				}
			},
		},
		{
			name:   "ipv6 over linux cooked (sll)",
			link:   linkSLL,
			frames: []frame{{0, sll(etIPv6, ipv6(pbx6.Addr(), edg6.Addr(), protoUDP, udp(pbx6, edg6, inv)))}},
			want:   []want{{wInv.start, UDP, pbx6.String()}},
		},
		{
			name:   "ipv4 over linux cooked v2 (sll2), pcapng",
			link:   linkSLL2,
			ng:     true,
			frames: []frame{{0, sll2(etIPv4, ipv4(pbx.Addr(), edge.Addr(), protoUDP, 1, 0, false, udp(pbx, edge, inv)))}},
			want:   []want{{wInv.start, UDP, pbx.String()}},
		},
		{
			name: "ipv4 fragments, last first",
			link: linkEthernet,
			frames: func() []frame {
				d := udp(pbx, edge, inv)
				return []frame{
					{1, ether(etIPv4, ipv4(pbx.Addr(), edge.Addr(), protoUDP, 9, 200, false, d[200:]))},
					{2, ether(etIPv4, ipv4(pbx.Addr(), edge.Addr(), protoUDP, 9, 0, true, d[:200]))},
				}
			}(),
			want: []want{{wInv.start, UDP, pbx.String()}},
			check: func(t *testing.T, st Stats) {
				if st.Fragments != 2 || st.Reassembled != 1 || st.FragmentsDropped != 0 {
					t.Errorf("fragments %d reassembled %d dropped %d, want 2, 1, 0", st.Fragments, st.Reassembled, st.FragmentsDropped)
				}
			},
		},
		{
			name: "an ipv4 fragment whose rest never comes, and one 61 s late",
			link: linkEthernet,
			frames: func() []frame {
				d := udp(pbx, edge, inv)
				return []frame{
					{1, ether(etIPv4, ipv4(pbx.Addr(), edge.Addr(), protoUDP, 7, 0, true, d[:200]))},
					{2, ether(etIPv4, ipv4(pbx.Addr(), edge.Addr(), protoUDP, 8, 0, true, d[:200]))},
					{61 * time.Second, ether(etIPv4, ipv4(pbx.Addr(), edge.Addr(), protoUDP, 8, 200, false, d[200:]))},
				}
			}(),
			check: func(t *testing.T, st Stats) {
				// Given up: 7 at the end, 8 at its late fragment, and the
				// late fragment itself at the end.
				if st.Fragments != 3 || st.Reassembled != 0 || st.FragmentsDropped != 3 {
					t.Errorf("fragments %d reassembled %d dropped %d, want 3, 0, 3", st.Fragments, st.Reassembled, st.FragmentsDropped)
				}
			},
		},
		{
			name: "ipv6 fragments",
			link: linkEthernet,
			frames: func() []frame {
				d := udp(pbx6, edg6, inv)
				fh := func(off int, more bool) []byte {
					v := uint16(off)
					if more {
						v |= 1
					}
					return []byte{protoUDP, 0, byte(v >> 8), byte(v), 0, 0, 0, 7}
				}
				return []frame{
					{1, ether(etIPv6, ipv6(pbx6.Addr(), edg6.Addr(), protoFrag6, append(fh(0, true), d[:160]...)))},
					{2, ether(etIPv6, ipv6(pbx6.Addr(), edg6.Addr(), protoFrag6, append(fh(160, false), d[160:]...)))},
				}
			}(),
			want: []want{{wInv.start, UDP, pbx6.String()}},
		},
		{
			name: "sip over websocket, client frames masked",
			link: linkEthernet,
			frames: func() []frame {
				up := []byte("GET / HTTP/1.1\r\nHost: pbx\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: sip\r\n\r\n")
				down := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				c, s := ap("192.0.2.50:43380"), ap("192.0.2.10:8080")
				f1 := wsFrame(inv, []byte{1, 2, 3, 4})
				f2 := wsFrame(ok, nil)
				return []frame{
					{1, ip(c, s, protoTCP, tcp(c, s, 1, 0, up))},
					{2, ip(s, c, protoTCP, tcp(s, c, 1, 0, down))},
					{3, ip(c, s, protoTCP, tcp(c, s, 1+uint32(len(up)), 0, f1[:30]))},
					{4, ip(c, s, protoTCP, tcp(c, s, 1+uint32(len(up))+30, 0, f1[30:]))},
					{5, ip(s, c, protoTCP, tcp(s, c, 1+uint32(len(down)), 0, f2[:3]))},
					{6, ip(s, c, protoTCP, tcp(s, c, 4+uint32(len(down)), 0, f2[3:]))},
				}
			}(),
			want: []want{{wInv.start, WS, "192.0.2.50:43380"}, {"SIP/2.0 200 OK", WS, "192.0.2.10:8080"}},
		},
		{
			name:   "hep3 envelope: the original addresses and time",
			link:   linkEthernet,
			frames: []frame{{0, ip(ap("10.0.0.1:40000"), ap("10.0.0.2:9060"), protoUDP, udp(ap("10.0.0.1:40000"), ap("10.0.0.2:9060"), hep3(pbx, edge, t0.Add(-time.Minute), inv)))}},
			want:   []want{{wInv.start, UDP, pbx.String()}},
		},
		{
			name: "hep3 over tcp: two envelopes, the second across segments",
			link: linkEthernet,
			frames: func() []frame {
				c, s := ap("10.0.0.1:40000"), ap("10.0.0.2:9061")
				h := append(hep3(pbx, edge, t0, inv), hep3(edge, pbx, t0, ok)...)
				return []frame{
					{1, ip(c, s, protoTCP, tcp(c, s, 1, 0, h[:len(h)-50]))},
					{2, ip(c, s, protoTCP, tcp(c, s, 1+uint32(len(h)-50), 0, h[len(h)-50:]))},
				}
			}(),
			want: []want{{wInv.start, UDP, pbx.String()}, {"SIP/2.0 200 OK", UDP, edge.String()}},
		},
		{
			name: "ip in ip, and gre with erspan type II",
			link: linkEthernet,
			frames: func() []frame {
				inner := ipv4(pbx.Addr(), edge.Addr(), protoUDP, 1, 0, false, udp(pbx, edge, inv))
				gre := append([]byte{0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0, 0, 1, 0, 0, 0, 0}, ether(etIPv4, inner)...)
				return []frame{
					{1, ether(etIPv4, ipv4(netip4("10.0.0.1"), netip4("10.0.0.2"), protoIPIP, 2, 0, false, inner))},
					{2, ether(etIPv4, ipv4(netip4("10.0.0.1"), netip4("10.0.0.2"), protoGRE, 3, 0, false, gre))},
				}
			}(),
			want: []want{{wInv.start, UDP, pbx.String()}, {wInv.start, UDP, pbx.String()}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var file []byte
			if c.ng {
				file = writePCAPNG(t, c.link, c.frames)
			} else {
				file = writePCAP(t, c.link, c.frames)
			}
			msgs, st, err := Read(bytes.NewReader(file), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			g := got(msgs)
			if len(g) != len(c.want) {
				t.Fatalf("got %d messages %v, want %d %v (stats %+v)", len(g), g, len(c.want), c.want, st)
			}
			for i := range g {
				if g[i] != c.want[i] {
					t.Errorf("message %d: got %+v, want %+v", i, g[i], c.want[i])
				}
			}
			// Every message is whole: its body is as long as it says.
			for _, m := range msgs {
				if !bytes.HasSuffix(m.Data, []byte("\r\n")) {
					t.Errorf("message %q... does not end where its Content-Length says", m.Data[:min(40, len(m.Data))])
				}
			}
			if c.check != nil {
				c.check(t, st)
			}
		})
	}
}

func netip4(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestCaptureHEPTime(t *testing.T) {
	at := t0.Add(-time.Minute).Add(1234 * time.Microsecond)
	inv := sipMsg("INVITE sip:+15557654321@edge.example SIP/2.0", "h1", 0)
	file := writePCAP(t, linkEthernet, []frame{{0, ip(ap("10.0.0.1:40000"), ap("10.0.0.2:9060"), protoUDP, udp(ap("10.0.0.1:40000"), ap("10.0.0.2:9060"), hep3(pbx, edge, at, inv)))}})
	msgs, _, err := Read(bytes.NewReader(file), Options{})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("got %d messages, err %v; want 1", len(msgs), err)
	}
	if m := msgs[0]; !m.HEP || !m.At.Equal(at) || m.Dst != edge {
		t.Errorf("got HEP %v at %s to %s; want the envelope's time %s and destination %s", m.HEP, m.At, m.Dst, at, edge)
	}
}

func TestCaptureNotACapture(t *testing.T) {
	for _, in := range []string{"", `{"start":0}`, "\xd4\xc3\xb2"} {
		if _, _, err := Read(strings.NewReader(in), Options{}); !errors.Is(err, ErrFormat) {
			t.Errorf("Read(%q): err %v, want ErrFormat", in, err)
		}
	}
}

func TestCaptureTruncated(t *testing.T) {
	inv := sipMsg("INVITE sip:+15557654321@edge.example SIP/2.0", "c1", 0)
	frames := []frame{{0, ip(pbx, edge, protoUDP, udp(pbx, edge, inv))}, {1, ip(pbx, edge, protoUDP, udp(pbx, edge, inv))}}
	for _, ng := range []bool{false, true} {
		file := writePCAP(t, linkEthernet, frames)
		if ng {
			file = writePCAPNG(t, linkEthernet, frames)
		}
		msgs, _, err := Read(bytes.NewReader(file[:len(file)-10]), Options{})
		if err == nil || len(msgs) != 1 {
			t.Errorf("pcapng %v cut short: %d messages, err %v; want the first message and an error", ng, len(msgs), err)
		}
	}
}

// TestCaptureFiles reads the public captures beside the repository. The
// expected figures are tshark's (docs/analyze.md says how they were
// taken): SIP messages, INVITE requests, and distinct Call-IDs of
// INVITEs, which is what analyze counts as calls.
func TestCaptureFiles(t *testing.T) {
	dir := capturesDir(t)
	cases := []struct {
		file                   string
		messages, invites, ids int
	}{
		{"heplify-erspan_sip_ipv4_udp.pcapng", 140, 16, 3},
		{"heplify-ipv6_udp_fragmented.pcap", 0, 0, 0}, // NDN over UDP, no SIP
		{"heplify-rtp_rtcp_sip_ipv4_udp.pcap", 14, 2, 2},
		{"heplify-sip_ipv4_tcp.pcap", 7, 1, 1},
		{"heplify-sip_ipv4_tcp_fragmented.pcap", 406, 37, 37},
		{"heplify-sip_ipv4_tcp_retrans.pcap", 8, 0, 0},
		{"heplify-sip_ipv6_udp.pcap", 6, 1, 1},
		{"heplify-sip_sctp.pcap", 4, 1, 1},
		{"heplify-sip_tcp_websocket.pcap", 39, 5, 2},
		{"sngrep-aaa.pcap", 81, 11, 4},
		{"sngrep-ipip.pcap", 4, 1, 1},
		{"sngrep-ipv6frag.pcap", 32, 2, 1},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join(dir, c.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			msgs, st, err := Read(f, Options{})
			if err != nil {
				t.Fatal(err)
			}
			invites, ids := 0, map[string]bool{}
			for _, m := range msgs {
				if bytes.HasPrefix(m.Data, []byte("INVITE ")) {
					invites++
					ids[callID(m.Data)] = true
				}
			}
			if len(msgs) != c.messages || invites != c.invites || len(ids) != c.ids {
				t.Errorf("got %d messages, %d INVITEs, %d Call-IDs; tshark shows %d, %d, %d (stats %+v)",
					len(msgs), invites, len(ids), c.messages, c.invites, c.ids, st)
			}
			for i := 1; i < len(msgs); i++ {
				if msgs[i].At.Before(msgs[i-1].At) {
					t.Fatalf("message %d at %s before message %d at %s", i, msgs[i].At, i-1, msgs[i-1].At)
				}
			}
		})
	}
}

func callID(msg []byte) string {
	for _, l := range bytes.Split(msg, []byte("\r\n")) {
		k, v, ok := bytes.Cut(l, []byte(":"))
		if ok && (bytes.EqualFold(bytes.TrimSpace(k), []byte("Call-ID")) || bytes.EqualFold(bytes.TrimSpace(k), []byte("i"))) {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}

// ngBlock appends a pcapng block in the given byte order.
func ngBlock(b []byte, o binary.AppendByteOrder, typ uint32, body []byte) []byte {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	n := uint32(12 + len(body))
	if typ == ngSection {
		b = binary.LittleEndian.AppendUint32(b, typ) // the same either way
	} else {
		b = o.AppendUint32(b, typ)
	}
	b = o.AppendUint32(b, n)
	b = append(b, body...)
	return o.AppendUint32(b, n)
}

func ngSHB(o binary.AppendByteOrder) []byte {
	b := o.AppendUint32(nil, 0x1a2b3c4d)
	b = o.AppendUint16(b, 1)
	b = o.AppendUint16(b, 0)
	return o.AppendUint64(b, ^uint64(0))
}

func ngIDB(o binary.AppendByteOrder, link uint16, snap uint32, opts ...[]byte) []byte {
	b := o.AppendUint16(nil, link)
	b = o.AppendUint16(b, 0)
	b = o.AppendUint32(b, snap)
	for _, op := range opts {
		b = append(b, op...)
	}
	return append(b, 0, 0, 0, 0)
}

func ngOpt(o binary.AppendByteOrder, code uint16, v []byte) []byte {
	b := o.AppendUint16(nil, code)
	b = o.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// TestCaptureFileFormats reads the pcap and pcapng variants writers
// produce: both byte orders, micro- and nanosecond pcap, pcapng time
// resolutions and offsets, simple and obsolete packet blocks, blocks the
// reader skips, and a second section that changes byte order and forgets
// the interfaces of the first.
func TestCaptureFileFormats(t *testing.T) {
	var le, be binary.AppendByteOrder = binary.LittleEndian, binary.BigEndian
	inv := sipMsg("INVITE sip:+15557654321@edge.example SIP/2.0", "f1", 0)
	eth := ip(pbx, edge, protoUDP, udp(pbx, edge, inv))
	raw := ipv4(pbx.Addr(), edge.Addr(), protoUDP, 1, 0, false, udp(pbx, edge, inv))
	at := time.Date(2026, 11, 2, 8, 0, 0, 123456000, time.UTC)
	epb := func(o binary.AppendByteOrder, iface uint32, ts uint64, data []byte) []byte {
		b := o.AppendUint32(nil, iface)
		b = o.AppendUint32(b, uint32(ts>>32))
		b = o.AppendUint32(b, uint32(ts))
		b = o.AppendUint32(b, uint32(len(data)))
		b = o.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	pcap := func(o binary.AppendByteOrder, nanos bool, link uint32, data []byte) []byte {
		magic := uint32(0xa1b2c3d4)
		frac := uint32(at.Nanosecond() / 1000)
		if nanos {
			magic, frac = 0xa1b23c4d, uint32(at.Nanosecond())
		}
		b := o.AppendUint32(nil, magic)
		b = o.AppendUint16(b, 2)
		b = o.AppendUint16(b, 4)
		b = append(b, make([]byte, 8)...)
		b = o.AppendUint32(b, 65535)
		b = o.AppendUint32(b, link)
		b = o.AppendUint32(b, uint32(at.Unix()))
		b = o.AppendUint32(b, frac)
		b = o.AppendUint32(b, uint32(len(data)))
		b = o.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	cases := []struct {
		name  string
		file  []byte
		times []time.Time // zero: a block without a time
	}{
		{"pcap big-endian microseconds", pcap(be, false, linkEthernet, eth), []time.Time{at}},
		{"pcap little-endian nanoseconds, raw ip", pcap(le, true, linkRaw, raw), []time.Time{at}},
		{"pcap link type with fcs bits set", pcap(le, true, linkEthernet|0x1000_0000, eth), []time.Time{at}},
		{"pcapng microseconds by default, unknown blocks skipped", func() []byte {
			b := ngBlock(nil, le, ngSection, ngSHB(le))
			b = ngBlock(b, le, 0x00000004, []byte("name resolution"))
			b = ngBlock(b, le, ngInterface, ngIDB(le, linkEthernet, 0))
			b = ngBlock(b, le, 0x00000005, make([]byte, 20)) // interface statistics
			return ngBlock(b, le, ngEnhanced, epb(le, 0, uint64(at.UnixMicro()), eth))
		}(), []time.Time{at}},
		{"pcapng 2^-20 resolution with an offset", func() []byte {
			b := ngBlock(nil, be, ngSection, ngSHB(be))
			b = ngBlock(b, be, ngInterface, ngIDB(be, linkEthernet, 0, ngOpt(be, 9, []byte{0x80 | 20}), ngOpt(be, 14, be.AppendUint64(nil, 3600))))
			ts := uint64(at.Unix()-3600)<<20 | uint64(at.Nanosecond())*(1<<20)/1e9
			return ngBlock(b, be, ngEnhanced, epb(be, 0, ts, eth))
		}(), []time.Time{at.Truncate(time.Second).Add(time.Duration(uint64(at.Nanosecond()) * (1 << 20) / 1e9 * 1e9 >> 20))}},
		{"pcapng simple and obsolete packet blocks", func() []byte {
			b := ngBlock(nil, le, ngSection, ngSHB(le))
			b = ngBlock(b, le, ngInterface, ngIDB(le, linkEthernet, 0))
			b = ngBlock(b, le, ngSimple, append(le.AppendUint32(nil, uint32(len(eth))), eth...))
			ts := uint64(at.UnixMicro())
			pb := le.AppendUint16(nil, 0)
			pb = le.AppendUint16(pb, 0)
			pb = le.AppendUint32(pb, uint32(ts>>32))
			pb = le.AppendUint32(pb, uint32(ts))
			pb = le.AppendUint32(pb, uint32(len(eth)))
			pb = le.AppendUint32(pb, uint32(len(eth)))
			return ngBlock(b, le, ngPacketOld, append(pb, eth...))
		}(), []time.Time{{}, at}},
		{"pcapng two sections, two byte orders, two link types", func() []byte {
			b := ngBlock(nil, le, ngSection, ngSHB(le))
			b = ngBlock(b, le, ngInterface, ngIDB(le, linkEthernet, 0))
			b = ngBlock(b, le, ngEnhanced, epb(le, 0, uint64(at.UnixMicro()), eth))
			b = ngBlock(b, be, ngSection, ngSHB(be))
			b = ngBlock(b, be, ngInterface, ngIDB(be, linkRaw, 0, ngOpt(be, 9, []byte{9})))
			return ngBlock(b, be, ngEnhanced, epb(be, 0, uint64(at.UnixNano()), raw))
		}(), []time.Time{at, at}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msgs, st, err := Read(bytes.NewReader(c.file), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != len(c.times) {
				t.Fatalf("%d messages, want %d (stats %+v)", len(msgs), len(c.times), st)
			}
			for i, m := range msgs {
				if !m.At.Equal(c.times[i]) || m.Src != pbx || !bytes.Equal(m.Data, inv) {
					t.Errorf("message %d at %s from %s (%d bytes), want %s from %s (%d bytes)", i, m.At, m.Src, len(m.Data), c.times[i], pbx, len(inv))
				}
			}
		})
	}
}

// TestCaptureBadFiles: damaged files end the read with an error, after
// the messages before the damage.
func TestCaptureBadFiles(t *testing.T) {
	var le binary.AppendByteOrder = binary.LittleEndian
	inv := sipMsg("INVITE sip:+15557654321@edge.example SIP/2.0", "b1", 0)
	eth := ip(pbx, edge, protoUDP, udp(pbx, edge, inv))
	good := writePCAPNG(t, linkEthernet, []frame{{0, eth}})
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"pcapng block length under its fixed fields", append(append([]byte(nil), good...), 6, 0, 0, 0, 8, 0, 0, 0), "block type 0x6000000 of 134217728 bytes"},
		{"pcapng packet longer than its block", func() []byte {
			b := ngBlock(nil, le, ngSection, ngSHB(le))
			b = ngBlock(b, le, ngInterface, ngIDB(le, linkEthernet, 0))
			body := le.AppendUint32(nil, 0)
			body = append(body, make([]byte, 8)...)
			body = le.AppendUint32(body, 1<<30)
			body = le.AppendUint32(body, 1<<30)
			return ngBlock(b, le, ngEnhanced, append(body, eth...))
		}(), "packet of 1073741824 bytes in a block of"},
		{"pcapng packet of an interface not described", func() []byte {
			b := ngBlock(nil, le, ngSection, ngSHB(le))
			body := le.AppendUint32(nil, 3)
			body = append(body, make([]byte, 16)...)
			return ngBlock(b, le, ngEnhanced, body)
		}(), "packet of interface 3, 0 described"},
		{"pcapng trailing length differs", func() []byte {
			b := append([]byte(nil), good...)
			b[len(b)-1] = 0x7f
			return b
		}(), "trailing length"},
		{"pcap record over the cap", func() []byte {
			b := writePCAP(t, linkEthernet, []frame{{0, eth}})
			b = le.AppendUint32(append(b, make([]byte, 8)...), 1<<31)
			return le.AppendUint32(b, 1<<31)
		}(), "more than any capture holds"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Read(bytes.NewReader(c.file), Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want one saying %q", err, c.want)
			}
		})
	}
}
