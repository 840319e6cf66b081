package capture

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Builders of capture files for the tests: frames are put together byte
// by byte, as a NIC would hand them to tcpdump, and written in the file
// formats by hand (the public captures beside the repository, written by
// tcpdump, dumpcap and sngrep, check the reader against real writers).
// Checksums are left zero: the reader does not check them (captures taken
// on the sending host have them offloaded).

var t0 = time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)

type frame struct {
	at   time.Duration
	data []byte
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func ether(et uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	binary.BigEndian.PutUint16(b[12:], et)
	return append(b, payload...)
}

func sll(et uint16, payload []byte) []byte {
	b := make([]byte, 16, 16+len(payload))
	binary.BigEndian.PutUint16(b[2:], 1)   // ARPHRD_ETHER
	binary.BigEndian.PutUint16(b[4:], 6)   // address length
	binary.BigEndian.PutUint16(b[14:], et) // protocol
	return append(b, payload...)
}

func sll2(et uint16, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], et)
	binary.BigEndian.PutUint16(b[8:], 1)
	b[11] = 6
	return append(b, payload...)
}

// ipv4 makes an IPv4 header; off is the fragment offset in bytes.
func ipv4(src, dst netip.Addr, proto byte, id uint16, off int, more bool, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(b[4:], id)
	ff := uint16(off / 8)
	if more {
		ff |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], ff)
	b[8], b[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, payload...)
}

func ipv6(src, dst netip.Addr, next byte, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6], b[7] = next, 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

func ip(src, dst netip.AddrPort, proto byte, payload []byte) []byte {
	if src.Addr().Is4() {
		return ether(etIPv4, ipv4(src.Addr(), dst.Addr(), proto, 1, 0, false, payload))
	}
	return ether(etIPv6, ipv6(src.Addr(), dst.Addr(), proto, payload))
}

func udp(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

func tcp(src, dst netip.AddrPort, seq uint32, flags byte, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = 5 << 4
	b[13] = flags | 0x10 // ACK
	return append(b, payload...)
}

// wsFrame makes a text frame, masked with key unless it is nil (server
// frames are not masked).
func wsFrame(payload []byte, key []byte) []byte {
	b := []byte{0x81}
	m := byte(0x80)
	if key == nil {
		m = 0
	}
	switch {
	case len(payload) < 126:
		b = append(b, m|byte(len(payload)))
	default:
		b = append(b, m|126, byte(len(payload)>>8), byte(len(payload)))
	}
	if key == nil {
		return append(b, payload...)
	}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i&3])
	}
	return b
}

func hep3(src, dst netip.AddrPort, at time.Time, payload []byte) []byte {
	var chunks []byte
	chunk := func(typ uint16, v []byte) {
		h := make([]byte, 6)
		binary.BigEndian.PutUint16(h[2:], typ)
		binary.BigEndian.PutUint16(h[4:], uint16(6+len(v)))
		chunks = append(append(chunks, h...), v...)
	}
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	chunk(hepProto, []byte{protoUDP})
	s, d := src.Addr().As4(), dst.Addr().As4()
	chunk(hepSrc4, s[:])
	chunk(hepDst4, d[:])
	chunk(hepSrcPort, u16(src.Port()))
	chunk(hepDstPort, u16(dst.Port()))
	chunk(hepSecs, u32(uint32(at.Unix())))
	chunk(hepMicros, u32(uint32(at.Nanosecond()/1000)))
	chunk(hepPayType, []byte{hepTypeSIP})
	chunk(hepPayload, payload)
	b := append([]byte("HEP3"), u16(uint16(6+len(chunks)))...)
	return append(b, chunks...)
}

// sipMsg makes a SIP request or response with a body of n bytes.
func sipMsg(start, callID string, n int) []byte {
	var b bytes.Buffer
	b.WriteString(start + "\r\n")
	b.WriteString("Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK" + callID + "\r\n")
	b.WriteString("From: <sip:+15551230001@pbx.example>;tag=a\r\nTo: <sip:+15557654321@edge.example>\r\n")
	b.WriteString("Call-ID: " + callID + "\r\nCSeq: 1 INVITE\r\n")
	b.WriteString("Content-Length: " + strconv.Itoa(n) + "\r\n\r\n")
	if n >= 2 {
		// A body ends its last line, as SDP does.
		b.Write(bytes.Repeat([]byte("v"), n-2))
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// writePCAP writes a pcap file with nanosecond times, little-endian.
func writePCAP(t testing.TB, link uint16, frames []frame) []byte {
	t.Helper()
	le := binary.LittleEndian
	b := le.AppendUint32(nil, 0xa1b23c4d)
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...) // thiszone, sigfigs
	b = le.AppendUint32(b, 65535)
	b = le.AppendUint32(b, uint32(link))
	for _, f := range frames {
		at := t0.Add(f.at)
		b = le.AppendUint32(b, uint32(at.Unix()))
		b = le.AppendUint32(b, uint32(at.Nanosecond()))
		b = le.AppendUint32(b, uint32(len(f.data)))
		b = le.AppendUint32(b, uint32(len(f.data)))
		b = append(b, f.data...)
	}
	return b
}

// writePCAPNG writes a big-endian pcapng file (the byte order other than
// the host's) with one interface whose times are in nanoseconds
// (if_tsresol 9) and one enhanced packet block per frame.
func writePCAPNG(t testing.TB, link uint16, frames []frame) []byte {
	t.Helper()
	be := binary.BigEndian
	block := func(b []byte, typ uint32, body []byte) []byte {
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
		n := uint32(12 + len(body))
		b = be.AppendUint32(b, typ)
		b = be.AppendUint32(b, n)
		b = append(b, body...)
		return be.AppendUint32(b, n)
	}
	shb := be.AppendUint32(nil, 0x1a2b3c4d)
	shb = be.AppendUint16(shb, 1)
	shb = be.AppendUint16(shb, 0)
	shb = be.AppendUint64(shb, ^uint64(0)) // section length not given
	b := block(nil, ngSection, shb)
	idb := be.AppendUint16(nil, link)
	idb = be.AppendUint16(idb, 0)
	idb = be.AppendUint32(idb, 0)                         // no snap length
	idb = append(idb, 0, 9, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0) // if_tsresol 10^-9, end of options
	b = block(b, ngInterface, idb)
	for _, f := range frames {
		ts := uint64(t0.Add(f.at).UnixNano())
		epb := be.AppendUint32(nil, 0)
		epb = be.AppendUint32(epb, uint32(ts>>32))
		epb = be.AppendUint32(epb, uint32(ts))
		epb = be.AppendUint32(epb, uint32(len(f.data)))
		epb = be.AppendUint32(epb, uint32(len(f.data)))
		b = block(b, ngEnhanced, append(epb, f.data...))
	}
	return b
}

// capturesDir is ../shared/captures from the repository root: public
// captures the project may read but must not copy (their README).
func capturesDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
	caps := filepath.Join(dir, "..", "shared", "captures")
	if _, err := os.Stat(caps); err != nil {
		t.Skipf("the public captures are not here (%s): they live outside the repository, beside it", caps)
	}
	return caps
}
