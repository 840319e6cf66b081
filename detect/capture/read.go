package capture

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"time"
)

// Format is the kind of an input file, told by its first bytes.
type Format uint8

// The formats Sniff tells apart.
const (
	Unknown Format = iota
	PCAP
	PCAPNG
)

func (f Format) String() string {
	switch f {
	case PCAP:
		return "pcap"
	case PCAPNG:
		return "pcapng"
	}
	return "unknown"
}

// Sniff tells a capture file by its magic number: the four pcap magics
// (micro- and nanosecond, either byte order) and the pcapng section header.
// Anything else is Unknown (a trace file, for analyze).
func Sniff(head []byte) Format {
	if len(head) < 4 {
		return Unknown
	}
	switch binary.LittleEndian.Uint32(head) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		return PCAP
	case 0x0a0d0d0a:
		return PCAPNG
	}
	return Unknown
}

// Transport is what carried a SIP message.
type Transport string

// The transports a capture can show.
const (
	UDP  Transport = "udp"
	TCP  Transport = "tcp"
	SCTP Transport = "sctp"
	WS   Transport = "ws" // WebSocket over TCP (RFC 7118)
)

// Message is one SIP message seen in a capture.
type Message struct {
	// At is the capture time of the packet that completed the message.
	At time.Time
	// Frame is that packet's number in the file, from 1, as Wireshark
	// numbers frames.
	Frame     int
	Src, Dst  netip.AddrPort
	Transport Transport
	// HEP is set when the message came inside a HEP3 envelope; Src, Dst
	// and At are then the envelope's (the original packet's).
	HEP bool
	// Data is the message as sent: start line, headers, body.
	Data []byte
}

// Options bound the memory the reader uses. Zero values take defaults.
type Options struct {
	// MaxFlows is the number of TCP flows (one per direction) and IP
	// datagrams in reassembly held at once; past it the least recently
	// used is dropped. Default 4096.
	MaxFlows int
	// MaxFlowBuffer caps the bytes held per TCP flow, in order and out of
	// order together; a flow that exceeds it (a lost segment, a message
	// larger than the cap) drops what it holds and picks up again at the
	// next SIP start line. Default 256 KiB.
	MaxFlowBuffer int
	// MaxMessage caps one SIP message (headers and body). Default 64 KiB.
	MaxMessage int
}

func (o *Options) defaults() {
	if o.MaxFlows <= 0 {
		o.MaxFlows = 4096
	}
	if o.MaxFlowBuffer <= 0 {
		o.MaxFlowBuffer = 256 << 10
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = 64 << 10
	}
	if o.MaxMessage > o.MaxFlowBuffer {
		o.MaxMessage = o.MaxFlowBuffer
	}
}

// Stats count what the reader saw and what it dropped.
type Stats struct {
	Format  Format
	Packets int // frames read
	// Undecoded are frames of a link or network protocol the reader does
	// not know, or too short for their headers.
	Undecoded int
	Messages  int // SIP messages found
	// Fragments are IP fragments taken in; Reassembled the datagrams made
	// whole from them; FragmentsDropped the datagrams in reassembly given
	// up: incomplete at the end of the file or 60 s after their first
	// fragment, or over the bounds.
	Fragments, Reassembled, FragmentsDropped int
	// TCPResyncs counts flows that lost bytes (a gap, a buffer over the
	// cap, data that is not SIP) and picked up again at a start line;
	// TCPBytesDropped is how many bytes that cost.
	TCPResyncs      int
	TCPBytesDropped int
	// FlowsEvicted are flows dropped to stay within MaxFlows.
	FlowsEvicted int
	// SCTPFragmented are pieces of SCTP user messages that could not be
	// put together (out of order, over the bounds), and skipped.
	SCTPFragmented int
}

// snapCap bounds a pcap packet whatever the file header claims: tcpdump's
// own maximum. A corrupt header cannot make the reader allocate more.
const snapCap = 262144

// ErrFormat is returned for input that is neither pcap nor pcapng.
var ErrFormat = errors.New("not a pcap or pcapng capture")

// Read returns the SIP messages of a capture in time order (capture order
// where times tie), and what it counted on the way. A damaged packet is
// skipped and counted; a damaged file ends the read with an error that
// wraps the reader's, after the messages read so far.
func Read(r io.Reader, opts Options) ([]Message, Stats, error) {
	opts.defaults()
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(4)
	d := newDecoder(opts)
	d.stats.Format = Sniff(head)
	var err error
	switch d.stats.Format {
	case PCAP:
		var pr *pcapReader
		if pr, err = newPcapReader(br); err == nil {
			err = d.readFrames(pr)
		}
	case PCAPNG:
		err = d.readFrames(newNgReader(br))
	default:
		return nil, d.stats, ErrFormat
	}
	d.flush()
	sort.SliceStable(d.out, func(i, j int) bool { return d.out[i].At.Before(d.out[j].At) })
	d.stats.Messages = len(d.out)
	return d.out, d.stats, err
}

// pcap (the libpcap format, draft-ietf-opsawg-pcap): a 24-byte file
// header (magic, version, snap length, link type) and 16-byte record
// headers (seconds, micro- or nanoseconds, captured and original length).
type pcapReader struct {
	r     *bufio.Reader
	order binary.ByteOrder
	nanos bool
	link  uint16
	buf   []byte
}

func newPcapReader(r *bufio.Reader) (*pcapReader, error) {
	var h [24]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("pcap header: %w", io.ErrUnexpectedEOF)
	}
	p := &pcapReader{r: r}
	switch m := binary.LittleEndian.Uint32(h[:]); m {
	case 0xa1b2c3d4, 0xa1b23c4d:
		p.order, p.nanos = binary.LittleEndian, m == 0xa1b23c4d
	default:
		p.order, p.nanos = binary.BigEndian, m == 0x4d3cb2a1
	}
	// The link type is the low 16 bits; the upper ones may say how many
	// FCS bytes each frame carries.
	p.link = uint16(p.order.Uint32(h[20:]))
	return p, nil
}

func (p *pcapReader) next() (link uint16, at time.Time, data []byte, err error) {
	var h [16]byte
	if _, err := io.ReadFull(p.r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, time.Time{}, nil, fmt.Errorf("record header cut off: %w", err)
		}
		return 0, time.Time{}, nil, err // io.EOF between records: the end
	}
	// The captured length is what follows, whatever the snap length in
	// the header says (tcpdump and Wireshark read it so); snapCap bounds
	// what a corrupt header can make the reader allocate.
	n := p.order.Uint32(h[8:])
	if n > snapCap {
		return 0, time.Time{}, nil, fmt.Errorf("record of %d bytes, more than any capture holds (%d)", n, snapCap)
	}
	if cap(p.buf) < int(n) {
		p.buf = make([]byte, n)
	}
	data = p.buf[:n]
	if _, err := io.ReadFull(p.r, data); err != nil {
		return 0, time.Time{}, nil, fmt.Errorf("record of %d bytes cut off: %w", n, io.ErrUnexpectedEOF)
	}
	frac := int64(p.order.Uint32(h[4:]))
	if !p.nanos {
		frac *= 1000
	}
	return p.link, time.Unix(int64(p.order.Uint32(h[:])), frac).UTC(), data, nil
}

type frameReader interface {
	next() (link uint16, at time.Time, data []byte, err error)
}

// readFrames decodes every frame of the file.
func (d *decoder) readFrames(fr frameReader) error {
	for {
		link, at, data, err := fr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s packet %d: %w", d.stats.Format, d.stats.Packets+1, err)
		}
		d.packet(link, at, data)
	}
}

// Link types (tcpdump.org/linktypes.html) the decoder reads.
const (
	linkNull     = 0
	linkEthernet = 1
	linkRaw      = 101
	linkRawAlt   = 12 // DLT_RAW on some BSDs
	linkRawAlt2  = 14
	linkLoop     = 108
	linkSLL      = 113
	linkIPv4     = 228
	linkIPv6     = 229
	linkSLL2     = 276
)

// packet decodes one frame of the given link type.
func (d *decoder) packet(link uint16, at time.Time, data []byte) {
	d.stats.Packets++
	d.at, d.frame = at, d.stats.Packets
	var ok bool
	switch link {
	case linkEthernet:
		ok = d.ethernet(data, 0)
	case linkSLL:
		// Linux cooked v1: 16 bytes, the EtherType last.
		ok = len(data) >= 16 && d.ethertype(binary.BigEndian.Uint16(data[14:]), data[16:], 0)
	case linkSLL2:
		// Linux cooked v2: 20 bytes, the EtherType first.
		ok = len(data) >= 20 && d.ethertype(binary.BigEndian.Uint16(data[0:]), data[20:], 0)
	case linkRaw, linkRawAlt, linkRawAlt2, linkIPv4, linkIPv6:
		ok = d.ip(data, 0)
	case linkNull, linkLoop:
		// A 4-byte address family in host (NULL) or network (LOOP) order;
		// the IP version nibble says the same more reliably.
		ok = len(data) >= 4 && d.ip(data[4:], 0)
	}
	if !ok {
		d.stats.Undecoded++
	}
}

// trimCRLF drops the CRLF keep-alives (RFC 5626) before a message.
func trimCRLF(b []byte) []byte { return bytes.TrimLeft(b, "\r\n") }
