package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// ErrCorrupt marks bytes in the file that do not decode: a damaged disk, a
// bug, or a file written by something else.
var ErrCorrupt = errors.New("corrupt store")

// stored is a record as it lies in an outbox bucket. Personal parts are
// sealed: only a subject reference (a keyed hash, never the number) and
// ciphertext reach the disk.
type stored struct {
	typ     Type
	id      [16]byte
	created int64 // unix milliseconds
	public  []byte
	parts   []sealedPart
}

type sealedPart struct {
	ref     subjectRef
	wrapped []byte // the subject's data key, wrapped by the device key
	sealed  []byte // nonce || ciphertext of (name, value)
}

// Layout, version 1:
//
//	0x01 | type | id[16] | uvarint(created ms) | uvarint(len) public |
//	uvarint(n) | n x (ref[32] | uvarint(len) wrapped key | uvarint(len) sealed)
//
// Each part carries its subject's wrapped data key, so a record can be read
// without the key bucket: the subject index and key bucket are brought up to
// date in batches (see mergeIndexLocked), not in every commit.
const codecVersion = 1

// Limits that keep a corrupt length from allocating wildly while decoding.
const (
	maxPublicLen  = 1 << 20
	maxSealedLen  = 1 << 20
	maxParts      = 1 << 12
	maxWrappedLen = 256
)

func (s *stored) size() int {
	n := 2 + 16 + binary.MaxVarintLen64 + binary.MaxVarintLen32 + len(s.public) + binary.MaxVarintLen32
	for _, p := range s.parts {
		n += len(p.ref) + 2*binary.MaxVarintLen32 + len(p.wrapped) + len(p.sealed)
	}
	return n
}

func (s *stored) appendTo(b []byte) []byte {
	b = append(b, codecVersion, byte(s.typ))
	b = append(b, s.id[:]...)
	b = binary.AppendUvarint(b, uint64(s.created))
	b = binary.AppendUvarint(b, uint64(len(s.public)))
	b = append(b, s.public...)
	b = binary.AppendUvarint(b, uint64(len(s.parts)))
	for _, p := range s.parts {
		b = append(b, p.ref[:]...)
		b = binary.AppendUvarint(b, uint64(len(p.wrapped)))
		b = append(b, p.wrapped...)
		b = binary.AppendUvarint(b, uint64(len(p.sealed)))
		b = append(b, p.sealed...)
	}
	return b
}

func (s *stored) encode() []byte { return s.appendTo(make([]byte, 0, s.size())) }

// decodeStored parses v. The result aliases v, which bbolt only guarantees
// for the life of the transaction: copy what must outlive it.
func decodeStored(v []byte) (*stored, error) {
	s := &stored{}
	if err := decodeStoredInto(s, v); err != nil {
		return nil, err
	}
	return s, nil
}

// decodeStoredInto is decodeStored into s, reusing its parts slice: the
// drain decodes every record into one stored. On error s holds nothing
// usable.
func decodeStoredInto(s *stored, v []byte) error {
	d := decoder{b: v}
	parts := s.parts[:0]
	*s = stored{}
	if ver := d.byte(); ver != codecVersion {
		return d.fail(fmt.Errorf("record format %d, want %d", ver, codecVersion))
	}
	s.typ = Type(d.byte())
	copy(s.id[:], d.bytes(16))
	s.created = int64(d.uvarint(1 << 62))
	s.public = d.bytes(int(d.uvarint(maxPublicLen)))
	n := int(d.uvarint(maxParts))
	if d.err == nil && n > 0 && parts == nil {
		parts = make([]sealedPart, 0, min(n, len(d.b)/32))
	}
	s.parts = parts
	for i := 0; i < n && d.err == nil; i++ {
		var p sealedPart
		copy(p.ref[:], d.bytes(len(p.ref)))
		p.wrapped = d.bytes(int(d.uvarint(maxWrappedLen)))
		p.sealed = d.bytes(int(d.uvarint(maxSealedLen)))
		s.parts = append(s.parts, p)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err == nil && !s.typ.valid() {
		d.err = fmt.Errorf("unknown type %d", s.typ)
	}
	if d.err != nil {
		return d.fail(d.err)
	}
	return nil
}

// decoder reads v front to back; the first error sticks and later reads
// return zero values, so decodeStored checks once instead of after each field.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) error { return fmt.Errorf("%w: %v", ErrCorrupt, err) }

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = errors.New("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.err = errors.New("truncated")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint(max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	// Only the shortest encoding is valid: a record has exactly one form,
	// which keeps the decoder and encoder exact inverses.
	if n <= 0 || n != uvarintLen(v) {
		d.err = errors.New("bad varint")
		return 0
	}
	if v > max {
		d.err = fmt.Errorf("length %d over limit %d", v, max)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// uvarintLen is len(binary.AppendUvarint(nil, v)), without the slice.
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }
