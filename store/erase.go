package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

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
			for _, k := range subjectEntries(tx, ref) {
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

// subjectEntries returns the subject's index entries, in type and sequence
// order.
func subjectEntries(tx *bolt.Tx, ref subjectRef) [][]byte {
	keys := indexRuns.withPrefix(tx, ref[:])
	slices.SortFunc(keys, bytes.Compare)
	return keys
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
// with nothing stored changes no record but still scrubs the free pages
// (acknowledged records of the subject may lie there), so a repeated
// command is harmless.
func (s *Store) EraseSubject(subject string) (EraseResult, error) {
	ref := s.keys.ref(s.Subject(subject))
	var res EraseResult
	var deleted [TypeReceipt + 1]int
	err := s.locked(func() error {
		return s.updateMerged(func(tx *bolt.Tx) error {
			res, deleted = EraseResult{}, [TypeReceipt + 1]int{}
			for _, k := range subjectEntries(tx, ref) {
				t, seq, err := parseIndexKey(k)
				if err != nil {
					return err
				}
				if err := s.eraseFromRecordLocked(tx, ref, t, seq, &res, &deleted); err != nil {
					return err
				}
			}
			destroyed, err := keyRuns.delete(tx, ref[:])
			if err != nil {
				return err
			}
			res.KeyDestroyed = destroyed
			if !res.changed() {
				return nil
			}
			s.reach("erase:before-commit")
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
		// Nothing of the subject is held, but records of it that the
		// platform acknowledged may still lie on free pages: scrub them.
		return res, s.compact()
	}
	s.statsMu.Lock()
	for t, n := range deleted {
		s.pending[t] -= n
	}
	s.statsMu.Unlock()
	s.reach("erase:committed")
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
		_, err := indexRuns.delete(tx, indexKey(ref, t, seq))
		return err
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
	if _, err := indexRuns.delete(tx, indexKey(ref, t, seq)); err != nil {
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
// refused as replays, the policy in force, and the calls in progress (lines
// and times), which are metered when they end.
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
			}
			keyRuns.forEach(tx, func(_, _ []byte) { res.Keys++ })
			for _, r := range []sortedRuns{indexRuns, keyRuns} {
				if err := r.drop(tx); err != nil {
					return err
				}
			}
			for _, name := range allBuckets() {
				if bytes.Equal(name, bucketMeta) || bytes.Equal(name, bucketLedger) || bytes.Equal(name, bucketPolicy) || bytes.Equal(name, bucketCalls) {
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
			s.keyFilter = nil // the next merge builds it afresh
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
	s.reach("erase:committed")
	return res, s.compact()
}

// compact makes sure no free page of the file keeps bytes of what was
// erased. When at least half the file is free (after EraseAll, or once a
// large backlog has drained) it rewrites the file, which gives the space
// back: copy, fsync, rename over the old file, fsync the directory.
// Otherwise it zeroes the free pages in place (see scrubLocked), which
// costs milliseconds instead of rewriting the whole file, needs no second
// copy's worth of free disk (an erase must not fail on a nearly full
// device), and spares the flash of small devices. A crash at any step
// leaves a whole file with its rewrite still pending, and the next Open
// redoes it.
func (s *Store) compact() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return ErrClosed
	}
	var free, pages int
	err := s.db.View(func(tx *bolt.Tx) error {
		f, n, err := s.freePages(tx)
		free, pages = len(f), n
		return err
	})
	if err != nil {
		return fmt.Errorf("store: compact: list free pages: %w", err)
	}
	if free*2 < pages {
		if err := s.scrubLocked(); err != nil {
			return fmt.Errorf("store: scrub free pages: %w", err)
		}
		return nil
	}
	tmp := s.compactPath()
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: compact: %w", err)
	}
	if err := s.compactTo(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: compact: %w", err)
	}
	s.reach("compact:copied")
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
	s.reach("compact:renamed")
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		s.log.Warn("fsync of the data directory failed after compaction", "err", err)
	}
	return s.openDB()
}

// scrubLocked overwrites every free page of the live file with zeros. bbolt
// never reads a free page (it writes one whole before using it), so this
// changes nothing bbolt sees. First one more commit, so that both meta
// pages describe trees from after the erase: the older meta would
// otherwise still point to pages about to be zeroed. Pending pages (freed
// by a commit that a reader might still see) are in bbolt's freelist too;
// the caller holds mu exclusively, so no reader is left to see them.
// compact_pending is cleared only once the zeros are on disk.
func (s *Store) scrubLocked() error {
	for range 2 {
		// Two commits: after them neither meta page names the tree of
		// the erase's predecessor, whatever slot the erase used.
		if err := s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(metaCompactPending, []byte{1})
		}); err != nil {
			return err
		}
	}
	s.reach("scrub:metas-flipped")
	var free map[int]bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		free, _, err = s.freePages(tx)
		return err
	})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	pageSize := int64(s.db.Info().PageSize)
	zero := make([]byte, pageSize)
	n := 0
	for id := range free {
		if _, err = f.WriteAt(zero, int64(id)*pageSize); err != nil {
			break
		}
		if n++; n == len(free)/2 {
			s.reach("scrub:half-zeroed")
		}
	}
	if err == nil {
		err = f.Sync()
	}
	s.reach("scrub:synced")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Delete(metaCompactPending)
	})
}

// compactTo writes a compacted copy of the store to path, without
// compact_pending (the copy is the finished state), and makes it durable.
// The copy skips per-transaction fsyncs: it is invisible until renamed.
func (s *Store) compactTo(path string) error {
	dst, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("open copy: %w", err)
	}
	err = bolt.Compact(dst, s.db, 64<<20)
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

func countKeys(b *bolt.Bucket) int {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}
