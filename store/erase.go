package store

import (
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
		return s.view(func(tx *bolt.Tx) error {
			kr := keyReader{s: s, tx: tx}
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
		return s.update(func(tx *bolt.Tx) error {
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
			s.cacheMu.Lock()
			delete(s.dataKeys, ref)
			s.cacheMu.Unlock()
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
		refs, err := deleteRecord(tx, t, seq, ulid.ULID(st.id))
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
		return s.update(func(tx *bolt.Tx) error {
			res = EraseAllResult{
				Usage:     tx.Bucket(outboxBucket(TypeUsage)).Stats().KeyN,
				Consent:   tx.Bucket(outboxBucket(TypeConsent)).Stats().KeyN,
				Violation: tx.Bucket(outboxBucket(TypeViolation)).Stats().KeyN,
				Receipt:   tx.Bucket(outboxBucket(TypeReceipt)).Stats().KeyN,
				Keys:      tx.Bucket(bucketKeys).Stats().KeyN,
			}
			for _, name := range allBuckets() {
				if bytes.Equal(name, bucketMeta) || bytes.Equal(name, bucketLedger) || bytes.Equal(name, bucketPolicy) {
					continue
				}
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			s.cacheMu.Lock()
			clear(s.dataKeys)
			s.cacheMu.Unlock()
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

// copyTo writes a compacted copy of the store to path. The copy skips fsync
// per transaction: it is invisible until renamed, and one fsync at the end
// makes it durable before the rename.
func (s *Store) copyTo(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	dst, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
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
