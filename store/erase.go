package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"
)

// EraseResult counts what an erase changed; it becomes a receipt's result.
type EraseResult struct {
	UsageRedacted     int  `json:"usage_redacted"`
	ConsentDeleted    int  `json:"consent_deleted"`
	ViolationRedacted int  `json:"violation_redacted"`
	ReceiptRedacted   int  `json:"receipt_redacted"`
	KeyDestroyed      bool `json:"key_destroyed"`
}

func (r EraseResult) changed() bool { return r != EraseResult{} }

// Export returns every record that holds a field of the subject, with only
// that subject's personal fields opened: an export for one person must not
// disclose another's number that shares a record with theirs.
func (s *Store) Export(subject string) ([]Record, error) {
	ref := s.keys.ref(s.Subject(subject))
	var out []Record
	err := s.locked(func() error {
		if err := s.updateMerged(nil); err != nil {
			return err
		}
		return s.view(func(tx *bolt.Tx) error {
			kr := keyReader{s: s}
			c := tx.Bucket(bucketSubjects).Cursor()
			for k, _ := c.Seek(ref[:]); k != nil && bytes.HasPrefix(k, ref[:]); k, _ = c.Next() {
				t, seq, err := parseIndexKey(k)
				if err != nil {
					return err
				}
				v := tx.Bucket(outboxBucket(t)).Get(seqKey(seq))
				if v == nil {
					return fmt.Errorf("%w: subject index points to missing %s seq %d", ErrCorrupt, t, seq)
				}
				st, err := decodeStored(v)
				if err != nil {
					return fmt.Errorf("%s outbox seq %d: %w", t, seq, err)
				}
				r, err := kr.record(seq, st, func(r subjectRef) bool { return r == ref })
				if err != nil {
					return err
				}
				out = append(out, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: export: %w", err)
	}
	return out, nil
}

func parseIndexKey(k []byte) (Type, uint64, error) {
	if len(k) != len(subjectRef{})+9 {
		return 0, 0, fmt.Errorf("%w: subject index key of %d bytes", ErrCorrupt, len(k))
	}
	t := Type(k[32])
	if !t.valid() {
		return 0, 0, fmt.Errorf("%w: subject index names type %d", ErrCorrupt, t)
	}
	return t, binary.BigEndian.Uint64(k[33:]), nil
}

// EraseSubject erases every personal field about the subject: its consent
// records are deleted, its fields are stripped from the other records (the
// rest stays, so billing stays right), its data key is destroyed, and the
// file is rewritten so no freed page keeps the old bytes. Erasing a subject
// with nothing stored is a no-op, so a repeated command is harmless.
func (s *Store) EraseSubject(subject string) (EraseResult, error) {
	ref := s.keys.ref(s.Subject(subject))
	var res EraseResult
	var deleted [TypeReceipt + 1]int
	err := s.locked(func() error {
		return s.updateMerged(func(tx *bolt.Tx) error {
			res, deleted = EraseResult{}, [TypeReceipt + 1]int{}
			var keys [][]byte
			c := tx.Bucket(bucketSubjects).Cursor()
			for k, _ := c.Seek(ref[:]); k != nil && bytes.HasPrefix(k, ref[:]); k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				t, seq, err := parseIndexKey(k)
				if err != nil {
					return err
				}
				if err := s.eraseFromRecordLocked(tx, ref, t, seq, &res, &deleted); err != nil {
					return err
				}
			}
			kb := tx.Bucket(bucketKeys)
			if kb.Get(ref[:]) != nil {
				res.KeyDestroyed = true
				if err := kb.Delete(ref[:]); err != nil {
					return err
				}
			}
			if !res.changed() {
				return nil
			}
			s.forgetKey(ref)
			// Committed with the erase, so a crash before the rewrite
			// finishes makes the next Open finish it.
			return tx.Bucket(bucketMeta).Put(metaCompactPending, []byte{1})
		})
	})
	if err != nil {
		return EraseResult{}, fmt.Errorf("store: erase subject: %w", err)
	}
	if !res.changed() {
		return res, nil
	}
	s.statsMu.Lock()
	for t, n := range deleted {
		s.pending[t] -= n
	}
	s.statsMu.Unlock()
	if err := s.compact(); err != nil {
		return res, err
	}
	return res, nil
}

func (s *Store) eraseFromRecordLocked(tx *bolt.Tx, ref subjectRef, t Type, seq uint64, res *EraseResult, deleted *[TypeReceipt + 1]int) error {
	ob := tx.Bucket(outboxBucket(t))
	key := seqKey(seq)
	v := ob.Get(key)
	if v == nil {
		return tx.Bucket(bucketSubjects).Delete(indexKey(ref, t, seq))
	}
	st, err := decodeStored(v)
	if err != nil {
		return fmt.Errorf("%s outbox seq %d: %w", t, seq, err)
	}
	if t == TypeConsent {
		// A consent record is about its subject from end to end.
		refs, _, err := deleteRecord(tx, t, seq, ulid.ULID(st.id))
		if err != nil {
			return err
		}
		for _, r := range refs {
			if r != ref {
				if err := s.dropKeyIfUnusedLocked(tx, r); err != nil {
					return err
				}
			}
		}
		res.ConsentDeleted++
		deleted[t]++
		return nil
	}
	kept := st.parts[:0:0]
	for _, p := range st.parts {
		if p.ref != ref {
			kept = append(kept, p)
		}
	}
	st.parts = kept
	if err := ob.Put(key, st.encode()); err != nil {
		return err
	}
	if err := tx.Bucket(bucketSubjects).Delete(indexKey(ref, t, seq)); err != nil {
		return err
	}
	switch t {
	case TypeUsage:
		res.UsageRedacted++
	case TypeViolation:
		res.ViolationRedacted++
	case TypeReceipt:
		res.ReceiptRedacted++
	}
	return nil
}

// EraseAllResult counts what EraseAll removed.
type EraseAllResult struct {
	Usage     int `json:"usage_deleted"`
	Consent   int `json:"consent_deleted"`
	Violation int `json:"violation_deleted"`
	Receipt   int `json:"receipt_deleted"`
	Keys      int `json:"keys_destroyed"`
}

// EraseAll deletes every record and data key, then rewrites the file
// (decommissioning). It keeps what holds nothing personal and guards the
// device: meta (device id, schema), the command ledger, so old commands stay
// refused as replays, and the policy in force.
func (s *Store) EraseAll() (EraseAllResult, error) {
	var res EraseAllResult
	err := s.locked(func() error {
		return s.updateMerged(func(tx *bolt.Tx) error {
			// Counted by cursor: Bucket.Stats does not see what this
			// transaction's merge has just written.
			res = EraseAllResult{
				Usage:     countKeys(tx.Bucket(outboxBucket(TypeUsage))),
				Consent:   countKeys(tx.Bucket(outboxBucket(TypeConsent))),
				Violation: countKeys(tx.Bucket(outboxBucket(TypeViolation))),
				Receipt:   countKeys(tx.Bucket(outboxBucket(TypeReceipt))),
				Keys:      countKeys(tx.Bucket(bucketKeys)),
			}
			for _, name := range allBuckets() {
				if bytes.Equal(name, bucketMeta) || bytes.Equal(name, bucketLedger) || bytes.Equal(name, bucketPolicy) {
					continue
				}
				// Sequences go on from where they were, so a reader
				// resuming after a sequence never skips new records.
				seq := tx.Bucket(name).Sequence()
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
				b, err := tx.CreateBucket(name)
				if err != nil {
					return err
				}
				if err := b.SetSequence(seq); err != nil {
					return err
				}
			}
			s.keyMu.Lock()
			clear(s.cache)
			clear(s.fresh)
			s.keyMu.Unlock()
			return tx.Bucket(bucketMeta).Put(metaCompactPending, []byte{1})
		})
	})
	if err != nil {
		return EraseAllResult{}, fmt.Errorf("store: erase all: %w", err)
	}
	s.statsMu.Lock()
	s.pending = [TypeReceipt + 1]int{}
	s.full = false
	s.statsMu.Unlock()
	return res, s.compact()
}

// compact rewrites the store into a new file and swaps it in: copy, fsync,
// rename over the old file, fsync the directory. A crash at any step leaves
// either the old file (with its compaction still pending, so the next Open
// redoes it) or the new one, and never a file without its data.
func (s *Store) compact() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return ErrClosed
	}
	tmp := s.compactPath()
	if err := s.copyTo(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: compact: %w", err)
	}
	if err := s.db.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: compact: close: %w", err)
	}
	s.db = nil
	if err := os.Rename(tmp, s.path); err != nil {
		// The old file is intact and still marked for compaction.
		os.Remove(tmp)
		if oerr := s.openDB(); oerr != nil {
			return errors.Join(fmt.Errorf("store: compact: rename: %w", err), oerr)
		}
		return fmt.Errorf("store: compact: rename: %w", err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		s.log.Warn("fsync of the data directory failed after compaction", "err", err)
	}
	return s.openDB()
}

// copyTo writes a copy of the store to path in which no free page keeps
// old bytes. When at least half the file is free it rebuilds the file
// (bbolt.Compact), which also gives the space back; otherwise it streams the
// file page by page with every free page zeroed, which keeps page ids and so
// costs one sequential copy instead of a B-tree rebuild (for a 555 MiB file,
// about 1 s against 5). Either way the copy is invisible until renamed, so it
// skips per-transaction fsyncs and is fsynced once at the end.
func (s *Store) copyTo(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var free, pages int
	err := s.db.View(func(tx *bolt.Tx) error {
		f, n, err := s.freePages(tx)
		free, pages = len(f), n
		return err
	})
	if err != nil {
		return fmt.Errorf("list free pages: %w", err)
	}
	if free*2 >= pages {
		return s.compactTo(path)
	}
	return s.scrubTo(path)
}

func (s *Store) compactTo(path string) error {
	return finishCopy(path, func(dst *bolt.DB) error { return bolt.Compact(dst, s.db, 64<<20) })
}

// finishCopy opens the copy at path, lets fill write into it (nil: it is
// already written), clears compact_pending in it, and makes it durable.
func finishCopy(path string, fill func(dst *bolt.DB) error) error {
	dst, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("open copy: %w", err)
	}
	if fill != nil {
		err = fill(dst)
	}
	if err == nil {
		err = dst.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Delete(metaCompactPending)
		})
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// freePages lists the pages in bbolt's freelist, pending ones included, and
// the number of pages in the file as tx sees it.
func (s *Store) freePages(tx *bolt.Tx) (map[int]bool, int, error) {
	free := map[int]bool{}
	pages := int(tx.Size() / int64(s.db.Info().PageSize))
	for id := 2; id < pages; id++ {
		info, err := tx.Page(id)
		if err != nil {
			return nil, 0, err
		}
		if info != nil && info.Type == "free" {
			free[id] = true
		}
	}
	return free, pages, nil
}

// scrubTo streams the file through bbolt's Tx.WriteTo, which writes both
// meta pages afresh from the current transaction, so neither points to a
// tree from before the erase. Pages in bbolt's freelist, pending ones
// included, are written as zeros. compact_pending is cleared in the copy
// only: cleared in the live file, a crash before the rename would leave the
// old pages with nothing to say they still need scrubbing.
func (s *Store) scrubTo(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		// The list is made in the transaction that is copied, so it
		// cannot disagree with the pages written.
		free, _, err := s.freePages(tx)
		if err != nil {
			return err
		}
		w := &scrubWriter{w: bufio.NewWriterSize(f, 1<<20), free: free, pageSize: s.db.Info().PageSize}
		if _, err := tx.WriteTo(w); err != nil {
			return err
		}
		return w.w.Flush()
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return finishCopy(path, nil)
}

// scrubWriter passes a bbolt file through, replacing the bytes of free
// pages with zeros.
type scrubWriter struct {
	w        *bufio.Writer
	free     map[int]bool
	pageSize int
	off      int
	zero     []byte
}

func (z *scrubWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		id := z.off / z.pageSize
		chunk := min(len(p), (id+1)*z.pageSize-z.off)
		var err error
		if z.free[id] {
			if len(z.zero) < chunk {
				z.zero = make([]byte, z.pageSize)
			}
			_, err = z.w.Write(z.zero[:chunk])
		} else {
			_, err = z.w.Write(p[:chunk])
		}
		if err != nil {
			return n, err
		}
		p = p[chunk:]
		n += chunk
		z.off += chunk
	}
	return n, nil
}

func countKeys(b *bolt.Bucket) int {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}
