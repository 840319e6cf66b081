package store

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/chacha20poly1305"
)

// AppendPendingJSON appends to dst, comma-separated, the records of type t
// after sequence `after`, oldest first, as the platform receives them (the
// object AppendJSON gives), while dst stays within max bytes; the first
// record always goes, however large. It returns the range of the records
// appended (First 0 when none) and how many they are; AckRanges takes the
// range once the platform has them.
//
// It is Pending and AppendJSON without the Records between them: the drain
// spent as much CPU cloning fields into Records, and reading records a
// batch had no room for, as on the JSON itself.
func (s *Store) AppendPendingJSON(dst []byte, t Type, after uint64, max int) ([]byte, Range, int, error) {
	return s.NewDrain().AppendPendingJSON(dst, t, after, max)
}

// Drain reads the outbox for one pass of the uploader and keeps the data
// keys it unwraps between batches, so a subject with records in several
// batches costs one unwrap, not one per record. Its life must not span an
// erase (the uploader's gate sees to that): the keys it holds would
// outlive their subject's erase.
//
// It reads without allocating per record: each record is decoded into one
// stored, its fields opened into one buffer with the AEAD kept with the
// key, and written straight into the caller's buffer. Garbage was most of
// the drain's memory traffic, and fresh heap pages cost it a page fault
// each. A Drain is not safe for concurrent use.
type Drain struct {
	s *Store
	// keys by the first 8 bytes of the subject's ref, a keyed hash: a
	// small map is quicker to search than one keyed by the whole ref
	// (each entry holds it, and two refs alike in 64 bits only take turns)
	keys map[uint64]*drainKey

	st     stored     // the record being read; aliases the page
	pt     []byte     // its opened fields
	fields []Field    // and their names and values (in pt)
	aad    partAADBuf // one part's associated data
}

// drainKey is a data key the drain has unwrapped, as the AEAD made from it
// (the key itself is not kept apart), with its subject and wrapped form
// in the same object: one cache miss where three were.
type drainKey struct {
	aead    cipher.AEAD
	ref     subjectRef
	wrapped [wrappedLen]byte // copied: pages do not outlive a transaction
}

// maxDrainKeys bounds the keys a Drain holds (about 180 bytes each: 3 MiB).
const maxDrainKeys = 16384

// maxDrainScratch bounds the buffer a Drain keeps for the opened fields
// of one record between records: a larger record (an export receipt can
// hold a megabyte) gets a buffer of its own, dropped after it.
const maxDrainScratch = 64 << 10

// NewDrain starts a pass of reads; drop it when the pass ends.
func (s *Store) NewDrain() *Drain { return &Drain{s: s, keys: map[uint64]*drainKey{}} }

// open opens part p of the record in d.st, appending its plaintext to d.pt.
func (d *Drain) open(p *sealedPart) (Field, error) {
	h := binary.LittleEndian.Uint64(p.ref[:8])
	dk := d.keys[h]
	if dk == nil || dk.ref != p.ref || !bytes.Equal(dk.wrapped[:], p.wrapped) {
		key, err := d.s.keys.unwrapDataKey(p.ref, p.wrapped)
		if err != nil {
			return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(d.st.id), err)
		}
		aead, err := chacha20poly1305.NewX(key)
		clear(key)
		if err != nil {
			return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(d.st.id), err)
		}
		if len(d.keys) >= maxDrainKeys {
			clear(d.keys)
		}
		dk = &drainKey{aead: aead, ref: p.ref}
		copy(dk.wrapped[:], p.wrapped) // wrappedLen bytes: no other length unwraps to a key
		d.keys[h] = dk
	}
	mark := len(d.pt)
	pt, err := openWith(dk.aead, d.pt, d.aad.set(d.st.id, p.ref), p.sealed)
	if err != nil {
		return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(d.st.id), err)
	}
	d.pt = pt
	name, value, err := splitField(pt[mark:])
	if err != nil {
		return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(d.st.id), err)
	}
	return Field{Name: fieldName(name), Value: value}, nil
}

// fieldName is string(name) without a copy for the names records have.
func fieldName(name []byte) string {
	switch string(name) {
	case "remote":
		return "remote"
	case "subject":
		return "subject"
	case "evidence":
		return "evidence"
	case "numbers":
		return "numbers"
	case "result":
		return "result"
	}
	return string(name)
}

// AppendPendingJSON is Store.AppendPendingJSON with the keys of this pass.
func (d *Drain) AppendPendingJSON(dst []byte, t Type, after uint64, max int) ([]byte, Range, int, error) {
	s := d.s
	rg := Range{Type: t}
	if !t.valid() {
		return dst, rg, 0, fmt.Errorf("store: pending: unknown type %d", t)
	}
	n := 0
	err := s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(outboxBucket(t)).Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				mark := len(dst)
				var err error
				if dst, err = d.appendRecord(dst, v, n > 0); err != nil {
					return fmt.Errorf("%s outbox seq %d: %w", t, seq, err)
				}
				if n > 0 && len(dst) > max {
					dst = dst[:mark]
					break
				}
				if n == 0 {
					rg.First = seq
				}
				rg.Last = seq
				n++
			}
			return nil
		})
	})
	// Nothing of the transaction's pages may stay behind.
	d.st.public = nil
	for i := range d.st.parts {
		d.st.parts[i] = sealedPart{}
	}
	if err != nil {
		return dst, Range{Type: t}, 0, fmt.Errorf("store: %w", err)
	}
	return dst, rg, n, nil
}

// appendRecord appends the stored record v as the platform receives it,
// after a comma when comma is set.
func (d *Drain) appendRecord(dst, v []byte, comma bool) ([]byte, error) {
	if err := decodeStoredInto(&d.st, v); err != nil {
		return dst, err
	}
	d.pt, d.fields = d.pt[:0], d.fields[:0]
	for i := range d.st.parts {
		f, err := d.open(&d.st.parts[i])
		if err != nil {
			return dst, err
		}
		d.fields = append(d.fields, f)
	}
	var id [ulid.EncodedSize]byte
	_ = ulid.ULID(d.st.id).MarshalTextTo(id[:])
	if comma {
		dst = append(dst, ',')
	}
	dst, err := appendRecordJSON(dst, id[:], d.st.typ, d.st.public, d.fields)
	if err != nil {
		return dst, err
	}
	clear(d.pt) // personal data does not linger in the buffer
	if cap(d.pt) > maxDrainScratch {
		d.pt = nil
	}
	for i := range d.fields {
		d.fields[i] = Field{}
	}
	return dst, nil
}
