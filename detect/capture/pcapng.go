package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// pcapng (draft-ietf-opsawg-pcapng): a file of blocks, each with its type
// and length before and after its body. A section header block sets the
// byte order of the blocks that follow it and forgets the interfaces of
// the previous section; an interface description block gives an
// interface's link type and time resolution; enhanced, simple and
// (obsolete) packet blocks carry the frames. Other blocks (name
// resolution, statistics, custom, decryption secrets) are skipped.

// pcapng block types.
const (
	ngSection   = 0x0a0d0d0a
	ngInterface = 0x00000001
	ngPacketOld = 0x00000002
	ngSimple    = 0x00000003
	ngEnhanced  = 0x00000006
)

// maxBlock bounds a pcapng block: a packet of snapCap with its options.
const maxBlock = snapCap + 64<<10

var errNgFraming = errors.New("pcapng block framing")

type ngIface struct {
	link uint16
	snap uint32
	// unitsPerSec is the timestamp resolution (if_tsresol; default
	// microseconds); offset is if_tsoffset, seconds added to every time.
	unitsPerSec uint64
	pow2        uint8 // resolution 2^-pow2 when non-zero
	offset      int64
}

type ngReader struct {
	r      *bufio.Reader
	order  binary.ByteOrder
	ifaces []ngIface
	buf    []byte
}

func newNgReader(r *bufio.Reader) *ngReader { return &ngReader{r: r} }

// next returns the next frame and its interface's link type. The data is
// valid until the following call.
func (n *ngReader) next() (link uint16, at time.Time, data []byte, err error) {
	for {
		typ, body, err := n.block()
		if err != nil {
			return 0, time.Time{}, nil, err
		}
		switch typ {
		case ngSection:
			n.ifaces = n.ifaces[:0]
		case ngInterface:
			if err := n.iface(body); err != nil {
				return 0, time.Time{}, nil, err
			}
		case ngEnhanced, ngPacketOld:
			var id int
			if typ == ngEnhanced {
				id = int(n.order.Uint32(body))
			} else {
				id = int(n.order.Uint16(body))
			}
			if id >= len(n.ifaces) {
				return 0, time.Time{}, nil, fmt.Errorf("%w: packet of interface %d, %d described", errNgFraming, id, len(n.ifaces))
			}
			c := int(n.order.Uint32(body[12:]))
			if c > len(body)-20 {
				return 0, time.Time{}, nil, fmt.Errorf("%w: packet of %d bytes in a block of %d", errNgFraming, c, len(body)+12)
			}
			ifc := &n.ifaces[id]
			ts := uint64(n.order.Uint32(body[4:]))<<32 | uint64(n.order.Uint32(body[8:]))
			return ifc.link, ifc.time(ts), body[20 : 20+c], nil
		case ngSimple:
			if len(n.ifaces) == 0 {
				return 0, time.Time{}, nil, fmt.Errorf("%w: simple packet before any interface", errNgFraming)
			}
			// The captured length is the original one cut to the snap
			// length and to the block; a simple packet has no time.
			c := min(int(n.order.Uint32(body)), len(body)-4)
			if s := n.ifaces[0].snap; s > 0 && uint32(c) > s {
				c = int(s)
			}
			return n.ifaces[0].link, time.Time{}, body[4 : 4+c], nil
		}
	}
}

// block reads one block; body excludes the type, the lengths and, for a
// section header, the byte-order magic.
func (n *ngReader) block() (typ uint32, body []byte, err error) {
	var hdr [12]byte
	if _, err := io.ReadFull(n.r, hdr[:8]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: a block header cut off: %w", errNgFraming, err)
		}
		return 0, nil, err // io.EOF: the end, between blocks
	}
	if binary.LittleEndian.Uint32(hdr[:]) == ngSection {
		if _, err := io.ReadFull(n.r, hdr[8:12]); err != nil {
			return 0, nil, fmt.Errorf("%w: section header cut off: %w", errNgFraming, io.ErrUnexpectedEOF)
		}
		switch {
		case binary.LittleEndian.Uint32(hdr[8:]) == 0x1a2b3c4d:
			n.order = binary.LittleEndian
		case binary.BigEndian.Uint32(hdr[8:]) == 0x1a2b3c4d:
			n.order = binary.BigEndian
		default:
			return 0, nil, fmt.Errorf("%w: section header without its byte-order magic", errNgFraming)
		}
	} else if n.order == nil {
		return 0, nil, fmt.Errorf("%w: a block before the first section header", errNgFraming)
	}
	typ = n.order.Uint32(hdr[:])
	total := int(n.order.Uint32(hdr[4:]))
	// The smallest block of each kind: its fixed fields and both lengths.
	least, read := 12, 8
	switch typ {
	case ngSection:
		least, read = 28, 12
	case ngInterface:
		least = 20
	case ngSimple:
		least = 16
	case ngEnhanced, ngPacketOld:
		least = 32
	}
	if total < least || total%4 != 0 || total > maxBlock {
		return 0, nil, fmt.Errorf("%w: block type %#x of %d bytes", errNgFraming, typ, total)
	}
	if typ != ngSection && typ != ngInterface && typ != ngSimple && typ != ngEnhanced && typ != ngPacketOld {
		if _, err := n.r.Discard(total - read); err != nil {
			return 0, nil, fmt.Errorf("%w: block type %#x cut off: %w", errNgFraming, typ, io.ErrUnexpectedEOF)
		}
		return typ, nil, nil
	}
	if cap(n.buf) < total-read {
		n.buf = make([]byte, total-read)
	}
	b := n.buf[:total-read]
	if _, err := io.ReadFull(n.r, b); err != nil {
		return 0, nil, fmt.Errorf("%w: block type %#x cut off: %w", errNgFraming, typ, io.ErrUnexpectedEOF)
	}
	if int(n.order.Uint32(b[len(b)-4:])) != total {
		return 0, nil, fmt.Errorf("%w: block type %#x: trailing length %d, leading %d", errNgFraming, typ, n.order.Uint32(b[len(b)-4:]), total)
	}
	return typ, b[:len(b)-4], nil
}

// iface reads an interface description: link type, snap length, and the
// options that set its times (if_tsresol 9, if_tsoffset 14).
func (n *ngReader) iface(b []byte) error {
	ifc := ngIface{link: n.order.Uint16(b), snap: n.order.Uint32(b[4:]), unitsPerSec: 1_000_000}
	opts := b[8:]
	for len(opts) >= 4 {
		code, l := n.order.Uint16(opts), int(n.order.Uint16(opts[2:]))
		if code == 0 || 4+l > len(opts) {
			break
		}
		v := opts[4 : 4+l]
		switch {
		case code == 9 && l == 1:
			if v[0]&0x80 != 0 {
				ifc.pow2 = v[0] & 0x7f
				if ifc.pow2 > 63 {
					return fmt.Errorf("%w: time resolution 2^-%d", errNgFraming, ifc.pow2)
				}
			} else {
				if v[0] > 19 {
					return fmt.Errorf("%w: time resolution 10^-%d", errNgFraming, v[0])
				}
				ifc.unitsPerSec = uint64(math.Pow10(int(v[0])))
			}
		case code == 14 && l == 8:
			ifc.offset = int64(n.order.Uint64(v))
		}
		opts = opts[4+(l+3)&^3:]
	}
	n.ifaces = append(n.ifaces, ifc)
	return nil
}

// time converts a timestamp in the interface's units.
func (i *ngIface) time(ts uint64) time.Time {
	var sec, nsec uint64
	if i.pow2 > 0 {
		sec = ts >> i.pow2
		frac := ts & (1<<i.pow2 - 1)
		nsec = uint64(float64(frac) / float64(uint64(1)<<i.pow2) * 1e9)
	} else {
		sec = ts / i.unitsPerSec
		frac := ts % i.unitsPerSec
		if i.unitsPerSec <= 1e9 {
			nsec = frac * (1e9 / i.unitsPerSec)
		} else {
			nsec = frac / (i.unitsPerSec / 1e9)
		}
	}
	return time.Unix(int64(sec)+i.offset, int64(nsec)).UTC()
}
