package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ngGuard checks the block framing of a pcapng stream before pcapgo reads
// it. pcapgo v1.1.19 trusts the lengths in the file: a block length under
// its header's size underflows, and a packet's captured length is
// allocated before it is compared with anything, so one corrupt header
// could make it allocate gigabytes. The guard passes each block through
// only when its lengths are consistent and small enough, so the reader
// behind it never sees a length larger than the block that holds it.
type ngGuard struct {
	r    *bufio.Reader
	left int // bytes of the current block still to pass through
	// order of the current section (its header's byte-order magic).
	order binary.ByteOrder
	err   error
}

// maxBlock bounds a pcapng block: a packet of snapCap with its options.
const maxBlock = snapCap + 64<<10

// pcapng block types the guard looks inside.
const (
	ngSection   = 0x0a0d0d0a
	ngInterface = 0x00000001
	ngPacketOld = 0x00000002
	ngSimple    = 0x00000003
	ngEnhanced  = 0x00000006
)

var errNgFraming = errors.New("pcapng block framing")

func (g *ngGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.left == 0 {
		if err := g.next(); err != nil {
			g.err = err
			return 0, err
		}
	}
	if len(p) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= n
	if errors.Is(err, io.EOF) && g.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// next checks the header of the block that starts here.
func (g *ngGuard) next() error {
	hdr, err := g.r.Peek(8)
	if len(hdr) == 0 && errors.Is(err, io.EOF) {
		return io.EOF
	}
	if len(hdr) < 8 {
		return fmt.Errorf("%w: %d bytes after the last block: %w", errNgFraming, len(hdr), io.ErrUnexpectedEOF)
	}
	typ := binary.LittleEndian.Uint32(hdr)
	if typ == ngSection {
		m, _ := g.r.Peek(12)
		if len(m) < 12 {
			return fmt.Errorf("%w: section header cut off: %w", errNgFraming, io.ErrUnexpectedEOF)
		}
		switch {
		case binary.LittleEndian.Uint32(m[8:]) == 0x1a2b3c4d:
			g.order = binary.LittleEndian
		case binary.BigEndian.Uint32(m[8:]) == 0x1a2b3c4d:
			g.order = binary.BigEndian
		default:
			return fmt.Errorf("%w: section header without its byte-order magic", errNgFraming)
		}
	}
	if g.order == nil {
		return fmt.Errorf("%w: a block before the first section header", errNgFraming)
	}
	typ = g.order.Uint32(hdr)
	n := int(g.order.Uint32(hdr[4:]))
	// The smallest block of each kind is its fixed fields plus the
	// trailing length: section 28, interface 20, simple 16, the two
	// packet blocks 32, any other 12.
	least := 12
	switch typ {
	case ngSection:
		least = 28
	case ngInterface:
		least = 20
	case ngSimple:
		least = 16
	case ngEnhanced, ngPacketOld:
		least = 32
	}
	if n < least || n%4 != 0 || n > maxBlock {
		return fmt.Errorf("%w: block type %#x of %d bytes", errNgFraming, typ, n)
	}
	if typ == ngEnhanced || typ == ngPacketOld || typ == ngSimple || typ == ngInterface {
		b, _ := g.r.Peek(least)
		if len(b) < least {
			return fmt.Errorf("%w: block type %#x cut off: %w", errNgFraming, typ, io.ErrUnexpectedEOF)
		}
		switch typ {
		case ngEnhanced, ngPacketOld:
			if c := int(g.order.Uint32(b[20:])); c > n-32 {
				return fmt.Errorf("%w: packet of %d bytes in a block of %d", errNgFraming, c, n)
			}
		case ngSimple:
			// pcapgo takes the original length as the captured one
			// unless the interface's snap length is smaller.
			if c := int(g.order.Uint32(b[8:])); c > n-16 {
				return fmt.Errorf("%w: simple packet of %d bytes in a block of %d", errNgFraming, c, n)
			}
		case ngInterface:
			// pcapgo sizes its packet buffer by the snap length: bound it.
			if s := g.order.Uint32(b[12:]); s > snapCap {
				g.order.PutUint32(b[12:], snapCap)
			}
		}
	}
	g.left = n
	return nil
}
