package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"
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
type Drain struct {
	s    *Store
	keys map[subjectRef]*dataKey // wrapped copied: pages do not outlive a transaction
}

// maxDrainKeys bounds the keys a Drain holds (about 100 bytes each).
const maxDrainKeys = 16384

// NewDrain starts a pass of reads; drop it when the pass ends.
func (s *Store) NewDrain() *Drain { return &Drain{s: s, keys: map[subjectRef]*dataKey{}} }

func (d *Drain) open(st *stored, p sealedPart) (Field, error) {
	dk := d.keys[p.ref]
	if dk == nil || !bytes.Equal(dk.wrapped, p.wrapped) {
		key, err := d.s.keys.unwrapDataKey(p.ref, p.wrapped)
		if err != nil {
			return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(st.id), err)
		}
		if len(d.keys) >= maxDrainKeys {
			clear(d.keys)
		}
		dk = &dataKey{key: key, wrapped: bytes.Clone(p.wrapped)}
		d.keys[p.ref] = dk
	}
	name, value, err := openField(dk.key, st.id, p.ref, p.sealed)
	if err != nil {
		return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(st.id), err)
	}
	return Field{Name: name, Value: value}, nil
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
			var r Record
			c := tx.Bucket(outboxBucket(t)).Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				st, err := decodeStored(v)
				if err != nil {
					return fmt.Errorf("%s outbox seq %d: %w", t, seq, err)
				}
				// Public aliases the page: AppendJSON copies it into dst
				// before the transaction ends.
				r = Record{ID: ulid.ULID(st.id).String(), Type: st.typ, Seq: seq, Public: st.public, Personal: r.Personal[:0]}
				for _, p := range st.parts {
					f, err := d.open(st, p)
					if err != nil {
						return err
					}
					r.Personal = append(r.Personal, f)
				}
				mark := len(dst)
				if n > 0 {
					dst = append(dst, ',')
				}
				if dst, err = r.AppendJSON(dst); err != nil {
					return fmt.Errorf("encoding record %s: %w", r.ID, err)
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
	if err != nil {
		return dst, Range{Type: t}, 0, fmt.Errorf("store: %w", err)
	}
	return dst, rg, n, nil
}
