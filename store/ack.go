package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Acknowledgement by sequence range.
//
// The drain publishes each outbox in sequence order and learns, batch by
// batch, that the broker has a run of consecutive records. Acknowledging
// them one by one (Ack) looked each one up by id, deleted its subject-index
// entries and checked whether its subject's key was still needed: random
// leaves of the index and key runs for every record, three quarters of the
// drain's CPU. AckRanges instead deletes the run from the outbox with one
// cursor, in order, and defers the index and key work:
//
//   - records not merged into the index yet have no entries: the merge log
//     is told to skip them;
//   - for merged ones, the range is appended to the ack log (bucket
//     "acked": type, first and last sequence, 17 bytes however many
//     records), in the same transaction as the deletion, so a crash loses
//     neither;
//   - the ack log is swept (sweepAckedLocked): when the outboxes are empty
//     after an acknowledgement (then every index entry and every key is
//     unused, and the runs are dropped whole, with no per-entry work), when
//     covers maxAckLog records, and before every merge, erase, export and
//     at Open (updateMerged). A sweep reads the index runs once, deletes
//     the entries of logged ranges, then destroys the keys of subjects left
//     without entries.
//
// So while a backlog drains, a delivered subject's key may outlive its last
// record until the backlog is drained, the next merge (32,768 appends), or
// maxAckLog acknowledgements, whichever comes first; an erase never waits
// on that, as it sweeps first.
var bucketAcked = []byte("acked") // counter -> type | first | last, of merged records acknowledged

// maxAckLog bounds the merged records acknowledged before an
// acknowledgement sweeps the log: a sweep reads the whole index, so it is
// kept rare while a backlog drains.
const maxAckLog = 1 << 18

// Range names records of one type by sequence, First and Last included.
type Range struct {
	Type        Type
	First, Last uint64
}

// AckRanges removes delivered records by sequence range, in one
// transaction. Every record of the type whose sequence lies in a range is
// removed: the caller read them, and sequences are never reused, so a range
// read from the outbox holds nothing else. It returns how many records it
// removed; ranges already acknowledged remove nothing (delivery is
// at-least-once).
func (s *Store) AckRanges(rs ...Range) (int, error) {
	for _, r := range rs {
		if !r.Type.valid() {
			return 0, fmt.Errorf("store: ack: unknown type %d", r.Type)
		}
		if r.Last < r.First {
			return 0, fmt.Errorf("store: ack: %s range %d-%d is empty", r.Type, r.First, r.Last)
		}
	}
	var removed [TypeReceipt + 1]int
	err := s.locked(func() error {
		var gone []mergeKey
		err := s.update(func(tx *bolt.Tx) error {
			removed, gone = [TypeReceipt + 1]int{}, gone[:0]
			var logged []Range
			var count uint64
			for _, r := range rs {
				ob := tx.Bucket(outboxBucket(r.Type))
				mark := watermark(tx, r.Type)
				c := ob.Cursor()
				merged := Range{Type: r.Type}
				// Backwards, from the last: on a leaf this transaction has
				// already changed, Delete shifts the entries after the
				// cursor, so Next would skip one; those before it stay
				// put, so Prev is safe (and needs no new search).
				k, _ := c.Seek(seqKey(r.Last + 1))
				if k == nil {
					k, _ = c.Last()
				} else {
					k, _ = c.Prev()
				}
				for ; k != nil; k, _ = c.Prev() {
					seq := binary.BigEndian.Uint64(k)
					if seq < r.First {
						break
					}
					if seq > mark {
						gone = append(gone, mergeKey{r.Type, seq})
					} else {
						if merged.Last == 0 {
							merged.Last = seq
						}
						merged.First = seq
						count++
					}
					if err := c.Delete(); err != nil {
						return err
					}
					removed[r.Type]++
				}
				if merged.Last != 0 {
					logged = append(logged, merged)
				}
			}
			held := uint64(0)
			if len(logged) > 0 {
				b, err := tx.CreateBucketIfNotExists(bucketAcked)
				if err != nil {
					return err
				}
				// The bucket's sequence counts the records its ranges
				// hold, and names each value by the count before it.
				held = b.Sequence()
				v := make([]byte, 0, len(logged)*ackRangeLen)
				for _, r := range logged {
					v = append(v, byte(r.Type))
					v = binary.BigEndian.AppendUint64(v, r.First)
					v = binary.BigEndian.AppendUint64(v, r.Last)
				}
				if err := b.Put(seqKey(held), v); err != nil {
					return err
				}
				held += count
				if err := b.SetSequence(held); err != nil {
					return err
				}
			} else if b := tx.Bucket(bucketAcked); b != nil {
				held = b.Sequence()
			}
			if held >= maxAckLog || (held > 0 && outboxesEmpty(tx)) {
				return s.sweepAckedLocked(tx)
			}
			return nil
		})
		if err == nil {
			s.mlog.forget(gone)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return s.removedFromOutboxes(&removed), nil
}

const ackRangeLen = 1 + 8 + 8

func outboxesEmpty(tx *bolt.Tx) bool {
	for _, t := range Types {
		if k, _ := tx.Bucket(outboxBucket(t)).Cursor().First(); k != nil {
			return false
		}
	}
	return true
}

// sweepAckedLocked brings the subject index and key runs up to date with
// the records acknowledged by range: their entries go, and so do the keys
// of subjects left with none. It runs in a write transaction, after the
// index merge when there is one.
func (s *Store) sweepAckedLocked(tx *bolt.Tx) error {
	b := tx.Bucket(bucketAcked)
	if b == nil {
		return nil
	}
	if k, _ := b.Cursor().First(); k == nil {
		return nil
	}
	if outboxesEmpty(tx) {
		// No record holds a field, so every index entry points nowhere
		// and no key is used: drop the runs whole.
		for _, r := range []sortedRuns{indexRuns, keyRuns} {
			if err := r.drop(tx); err != nil {
				return err
			}
		}
		s.keyMu.Lock()
		clear(s.cache)
		if s.keyFilter != nil {
			s.keyFilter = newKeyFilter(0)
		}
		s.keyMu.Unlock()
		return emptyAckLog(tx)
	}
	var acked [TypeReceipt + 1][]Range
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v)%ackRangeLen != 0 {
			return fmt.Errorf("%w: ack log entry of %d bytes", ErrCorrupt, len(v))
		}
		for i := 0; i < len(v); i += ackRangeLen {
			t := Type(v[i])
			if !t.valid() {
				return fmt.Errorf("%w: ack log names type %d", ErrCorrupt, t)
			}
			acked[t] = append(acked[t], Range{Type: t, First: binary.BigEndian.Uint64(v[i+1:]), Last: binary.BigEndian.Uint64(v[i+9:])})
		}
	}
	for t := range acked {
		slices.SortFunc(acked[t], func(a, b Range) int { return cmp.Compare(a.First, b.First) })
	}
	isAcked := func(t Type, seq uint64) bool {
		if !t.valid() {
			return false
		}
		rs := acked[t]
		i, _ := slices.BinarySearchFunc(rs, seq, func(r Range, seq uint64) int { return cmp.Compare(r.First, seq) })
		// rs[i-1] is the last range starting at or before seq.
		if i < len(rs) && rs[i].First == seq {
			return true
		}
		return i > 0 && seq <= rs[i-1].Last
	}
	// One pass over every run: the logged ranges name records, not
	// subjects, and the index is ordered by subject.
	dead := map[subjectRef]struct{}{}
	for _, x := range indexRuns.all(tx) {
		rc := x.b.Cursor()
		// Seek again after each Delete (see AckRanges).
		for k, _ := rc.First(); k != nil; {
			if len(k) != indexKeyLen || !isAcked(Type(k[32]), binary.BigEndian.Uint64(k[33:])) {
				k, _ = rc.Next()
				continue
			}
			dead[subjectRef(k[:32])] = struct{}{}
			next := bytes.Clone(k)
			if err := rc.Delete(); err != nil {
				return err
			}
			k, _ = rc.Seek(next)
		}
	}
	refs := make([]subjectRef, 0, len(dead))
	for r := range dead {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b subjectRef) int { return bytes.Compare(a[:], b[:]) })
	for _, ref := range refs {
		if indexRuns.hasPrefix(tx, ref[:]) {
			continue
		}
		if _, err := keyRuns.delete(tx, ref[:]); err != nil {
			return err
		}
		s.keyMu.Lock()
		delete(s.cache, ref)
		s.keyMu.Unlock()
	}
	return emptyAckLog(tx)
}

const indexKeyLen = len(subjectRef{}) + 1 + 8

// emptyAckLog deletes the log's values and resets its count.
func emptyAckLog(tx *bolt.Tx) error {
	b := tx.Bucket(bucketAcked)
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return b.SetSequence(0)
}
