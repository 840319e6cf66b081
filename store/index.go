package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"
)

// The subject index and the key bucket are keyed by a keyed hash, so every
// entry lands on a random leaf. Written in each commit they dirtied two
// random pages per record, several times the pages of the record itself.
// Instead a commit writes only the outbox (in sequence order) and each
// record part carries its subject's wrapped key; the index and key bucket
// catch up in batches, sorted, from a watermark per outbox: every
// mergeEvery records, before an erase or export, and at Open. Each batch
// becomes a new sorted run (see sortedRuns), which merge steps fold into
// the older runs later, a few entries per record committed.
//
// A merge writes its batch in one transaction, which every commit waits
// for: 32,768 records took 56-111 ms at 3,700 records/s with both cores
// busy, and every BYE answer arriving meanwhile waited for it (the proxy
// answers a BYE once its usage record is durable). Smaller batches mean
// shorter waits but one more rewrite of each entry for every halving (log2
// of the runs they make); the bounds also keep the tail quick to scan at
// Open and the fresh keys (about 150 bytes each) small in memory.
const (
	mergeEvery   = 8192  // records written since the last merge
	maxFreshKeys = 32768 // keys made since the last merge
)

// runStep is the most entries a merge step writes in each table, and
// runCreditPerRecord how many a record committed earns. A record files up
// to four entries (two subjects and, when new, their keys), each rewritten
// about log2(maxRunEntries/mergeEvery) = 5 times, so the steps keep up with
// the commits with room to spare; a step runs once the credit reaches
// runStep, in its own transaction: 3-4 ms on an idle machine, and 10-50 ms
// with both cores busy, where a merge in one transaction took up to 1.3 s.
const (
	runStep            = 4096
	runCreditPerRecord = 32
)

// stepRuns writes one step of the runs' merges. Its own transaction keeps
// a failed step from failing the records it would have been committed with.
func (s *Store) stepRuns() error {
	err := s.update(func(tx *bolt.Tx) error {
		more := false
		for _, r := range []sortedRuns{indexRuns, keyRuns} {
			m, err := r.step(tx, s.opts.runStep)
			if err != nil {
				return err
			}
			more = more || m
		}
		// Set inside the transaction: an index merge's new runs, in
		// another write transaction, come before or after, never between.
		s.runWork.Store(more)
		// A step reads the runs it merges, up to runStep entries of
		// each, pages no commit needs again: dropped here, not by the
		// commits' trim later, which left up to 13 MiB of them resident
		// at three times the proxy's capacity.
		if err := trimMap(s.db, tx); err != nil {
			s.log.Debug("could not trim the store's map", "err", err)
		}
		return nil
	})
	if err != nil {
		s.runWork.Store(true)
	}
	return err
}

// trimEvery is how often a commit drops bbolt's map from the resident set
// (trimMap): the pages a quarter of a second of commits touched. Once a
// second, the map peaked at 9 MiB beside the agent's own memory at three
// times the proxy's capacity (with merge steps trimming their own pages:
// stepRuns); a quarter of a second keeps it near 3-5 MiB. The pages
// commits need again come back by a minor fault each: no change in CPU a
// call measured at 100 calls/s or at capacity (docs/sip.md).
const trimEvery = 250 * time.Millisecond

// maxCachedKeys bounds the unwrapped data keys kept in memory; past it the
// cache starts again (keys are a Get and an unwrap away).
const maxCachedKeys = 4096

func watermarkKey(t Type) []byte { return []byte("indexed." + t.String()) }

func watermark(tx *bolt.Tx, t Type) uint64 {
	if v := tx.Bucket(bucketMeta).Get(watermarkKey(t)); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// dataKey is a subject's data key, with its wrapped form for record parts.
type dataKey struct {
	key     []byte
	wrapped []byte
}

// cachedKey returns the subject's data key if memory has it: made since the
// last merge (fresh) or read from the key bucket before (cache).
func (s *Store) cachedKey(ref subjectRef) *dataKey {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if dk := s.fresh[ref]; dk != nil {
		return dk
	}
	return s.cache[ref]
}

// appenderKey returns the subject's data key for an appender to seal with
// outside the committer: from memory, or made here when the key filter says
// the key bucket cannot hold one (most parties of a call centre are new).
// It returns nil when only a key bucket search can tell; the committer
// then looks the key up in its transaction.
func (s *Store) appenderKey(ref subjectRef) (*dataKey, error) {
	s.keyMu.Lock()
	dk := s.fresh[ref]
	if dk == nil {
		dk = s.cache[ref]
	}
	unknown := dk == nil && s.keyFilter != nil && !s.keyFilter.mayHave(ref)
	s.keyMu.Unlock()
	if !unknown {
		return dk, nil
	}
	// Made without the lock: random bytes and a seal are most of an
	// append's cost, and appenders should spend it on every core.
	return s.newFreshKey(ref)
}

// newFreshKey makes and wraps a data key for the subject and keeps it in
// fresh until the next merge, unless another goroutine kept one for the
// subject meanwhile: then that one is returned.
func (s *Store) newFreshKey(ref subjectRef) (*dataKey, error) {
	k, err := newKey()
	if err != nil {
		return nil, err
	}
	w, err := s.keys.wrapDataKey(ref, k)
	if err != nil {
		return nil, err
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if dk := s.fresh[ref]; dk != nil {
		return dk, nil
	}
	dk := &dataKey{key: k, wrapped: w}
	s.fresh[ref] = dk
	return dk, nil
}

// dataKeyLocked returns the subject's data key from memory or the key
// bucket, or makes one, kept in fresh until the next merge writes it to the
// key bucket. It runs in the committer's write transaction. Should an
// appender race it with a key from memory that an erase has just dropped,
// no harm follows: each record part carries the key it was sealed with,
// and an erase strips every part of the subject.
func (s *Store) dataKeyLocked(tx *bolt.Tx, ref subjectRef) (*dataKey, error) {
	if dk := s.cachedKey(ref); dk != nil {
		return dk, nil
	}
	s.keyMu.Lock()
	absent := s.keyFilter != nil && !s.keyFilter.mayHave(ref)
	s.keyMu.Unlock()
	if absent {
		// Certainly not in the key bucket: skip the search.
	} else if w := keyRuns.get(tx, ref[:]); w != nil {
		k, err := s.keys.unwrapDataKey(ref, w)
		if err != nil {
			return nil, err
		}
		dk := &dataKey{key: k, wrapped: bytes.Clone(w)}
		s.keyMu.Lock()
		if len(s.cache) >= maxCachedKeys {
			clear(s.cache)
		}
		s.cache[ref] = dk
		s.keyMu.Unlock()
		return dk, nil
	}
	return s.newFreshKey(ref)
}

// forgetKey drops a subject's key from memory after its erase.
func (s *Store) forgetKey(ref subjectRef) {
	s.keyMu.Lock()
	delete(s.fresh, ref)
	delete(s.cache, ref)
	s.keyMu.Unlock()
}

// mergeIndexLocked brings the subject index and key bucket up to date with
// every record written since the watermarks, in sorted order so each leaf
// is written once per merge. Records acknowledged before their merge leave
// no entry, and neither do keys that no remaining record uses.
func (s *Store) mergeIndexLocked(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	var entries [][]byte
	keys := map[subjectRef][]byte{}
	var marks [TypeReceipt + 1]uint64
	for _, t := range Types {
		marks[t] = watermark(tx, t)
	}
	if s.mlog.covers(marks) {
		// Every record since the watermarks went through a commit of
		// this process: file what those commits noted.
		for _, e := range s.mlog.entries {
			if s.mlog.deleted[mergeKey{e.typ, e.seq}] {
				continue // acknowledged before its merge
			}
			entries = append(entries, indexKey(e.ref, e.typ, e.seq))
			if _, ok := keys[e.ref]; !ok {
				keys[e.ref] = e.wrapped
			}
		}
	} else {
		for _, t := range Types {
			c := tx.Bucket(outboxBucket(t)).Cursor()
			for k, v := c.Seek(seqKey(marks[t] + 1)); k != nil; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				st, err := decodeStored(v)
				if err != nil {
					return fmt.Errorf("%s outbox seq %d: %w", t, seq, err)
				}
				for i, p := range st.parts {
					if slices.ContainsFunc(st.parts[:i], func(q sealedPart) bool { return q.ref == p.ref }) {
						continue
					}
					entries = append(entries, indexKey(p.ref, t, seq))
					if _, ok := keys[p.ref]; !ok {
						keys[p.ref] = p.wrapped
					}
				}
			}
		}
	}
	var next [TypeReceipt + 1]uint64
	for _, t := range Types {
		next[t] = marks[t]
		if seq := tx.Bucket(outboxBucket(t)).Sequence(); seq > marks[t] {
			next[t] = seq
			if err := meta.Put(watermarkKey(t), binary.BigEndian.AppendUint64(nil, seq)); err != nil {
				return err
			}
		}
	}
	s.mlog.merged = &next
	slices.SortFunc(entries, bytes.Compare)
	run := make([]entry, len(entries))
	for i, e := range entries {
		run[i] = entry{k: e, v: []byte{}}
	}
	if err := indexRuns.add(tx, run); err != nil {
		return err
	}
	refs := make([]subjectRef, 0, len(keys))
	for r := range keys {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b subjectRef) int { return bytes.Compare(a[:], b[:]) })
	// Only write transactions change the filter, so this one reads it
	// without keyMu.
	known := s.keyFilter
	newKeys := make([]entry, 0, len(refs))
	for _, r := range refs {
		if known == nil || known.mayHave(r) {
			if keyRuns.get(tx, r[:]) != nil {
				continue // an earlier merge filed this subject's key
			}
		}
		newKeys = append(newKeys, entry{k: bytes.Clone(r[:]), v: keys[r]})
	}
	if err := keyRuns.add(tx, newKeys); err != nil {
		return err
	}
	s.runWork.Store(true) // the new runs may call for merges
	var rebuilt *keyFilter
	s.keyMu.Lock()
	stale := s.keyFilter == nil || s.keyFilter.full()
	s.keyMu.Unlock()
	if stale {
		rebuilt = buildKeyFilter(tx) // outside keyMu: it reads every key
	}
	s.keyMu.Lock()
	if rebuilt != nil {
		s.keyFilter = rebuilt
	} else {
		for _, r := range refs {
			s.keyFilter.add(r)
		}
	}
	s.keyMu.Unlock()
	return nil
}

// buildKeyFilter makes a filter of every stored key, sized for twice as
// many.
func buildKeyFilter(tx *bolt.Tx) *keyFilter {
	n := 0
	keyRuns.forEach(tx, func(_, _ []byte) { n++ })
	f := newKeyFilter(2 * n)
	keyRuns.forEach(tx, func(k, _ []byte) {
		if len(k) == len(subjectRef{}) {
			f.add(subjectRef(k))
		}
	})
	return f
}

// updateMerged runs fn in a write transaction after merging the index, so
// fn sees every record in it. Keys made since the last merge are in the key
// bucket once this commits; until then they stay in fresh.
func (s *Store) updateMerged(fn func(*bolt.Tx) error) error {
	var taken map[subjectRef]*dataKey
	err := s.update(func(tx *bolt.Tx) error {
		if err := s.mergeIndexLocked(tx); err != nil {
			return err
		}
		// Records acknowledged by range leave their entries and keys to
		// be swept (store/ack.go): fn sees neither.
		if err := s.sweepAckedLocked(tx); err != nil {
			return err
		}
		s.keyMu.Lock()
		taken, s.fresh = s.fresh, map[subjectRef]*dataKey{}
		s.keyMu.Unlock()
		if fn != nil {
			return fn(tx)
		}
		return nil
	})
	if err != nil && taken != nil {
		// Rolled back: those keys are still only in their records.
		s.keyMu.Lock()
		for r, dk := range taken {
			if _, ok := s.fresh[r]; !ok {
				s.fresh[r] = dk
			}
		}
		s.keyMu.Unlock()
		return err
	}
	if err == nil {
		s.unmerged.Store(0)
		s.mlog.restart()
	} else {
		s.mlog.merged = nil
	}
	return err
}

// Record ids are ULIDs whose 80 bits after the time hold the record type (8
// bits), its outbox sequence (40 bits) and 32 random bits. Acknowledging by
// id then needs no id index, and ids of different devices made in the same
// millisecond with the same sequence still differ by the random bits.
const (
	seqBits     = 40
	idSeqOffset = 7 // id[7:12] holds the sequence
	idSeqLen    = 5
	// idOffset is where the id starts in an encoded record.
	idOffset = 2
)

// setIDSeq writes seq into an id's sequence bytes.
func setIDSeq(id []byte, seq uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq&(1<<seqBits-1))
	copy(id[idSeqOffset:idSeqOffset+idSeqLen], b[3:])
}

func makeID(now time.Time, t Type, seq uint64) ([16]byte, error) {
	var id ulid.ULID
	if err := id.SetTime(ulid.Timestamp(now)); err != nil {
		return id, err
	}
	id[6] = byte(t)
	setIDSeq(id[:], seq)
	if _, err := rand.Read(id[12:]); err != nil {
		return id, fmt.Errorf("random id: %w", err)
	}
	return id, nil
}

// parseID returns where a record id says the record is. A record found
// there must still carry the same id: ids are checked, not trusted.
func parseID(s string) (ulid.ULID, Type, uint64, error) {
	id, err := ulid.ParseStrict(s)
	if err != nil {
		return id, 0, 0, fmt.Errorf("record id %q: %w", s, err)
	}
	var b [8]byte
	copy(b[3:], id[idSeqOffset:idSeqOffset+idSeqLen])
	return id, Type(id[6]), binary.BigEndian.Uint64(b[:]), nil
}

// tailHasParts reports whether a record not yet merged into the index holds
// a sealed field, which only the device key opens.
func tailHasParts(tx *bolt.Tx) bool {
	for _, t := range Types {
		ob := tx.Bucket(outboxBucket(t))
		if ob == nil {
			continue
		}
		c := ob.Cursor()
		for k, v := c.Seek(seqKey(watermark(tx, t) + 1)); k != nil; k, v = c.Next() {
			if st, err := decodeStored(v); err != nil || len(st.parts) > 0 {
				return true // undecodable counts: better refuse than lose it
			}
		}
	}
	return false
}

// mergeLog is what the commits since the last merge wrote that the index
// must file. It holds only while every record since the watermarks went
// through it: from the first merge of this process on (at Open the
// watermarks may trail records of an earlier run, which the merge reads
// from the outbox instead).
type mergeLog struct {
	valid   bool
	from    [TypeReceipt + 1]uint64 // the watermarks it starts at
	entries []mergeEntry
	deleted map[mergeKey]bool // acknowledged before their merge
	// merged holds the watermarks a merge in progress moves to, until
	// its transaction commits.
	merged *[TypeReceipt + 1]uint64
}

type mergeEntry struct {
	ref     subjectRef
	wrapped []byte
	typ     Type
	seq     uint64
}

type mergeKey struct {
	typ Type
	seq uint64
}

// partRef is a subject a record holds fields of, and its wrapped key.
type partRef struct {
	ref     subjectRef
	wrapped []byte
}

func (m *mergeLog) covers(marks [TypeReceipt + 1]uint64) bool { return m.valid && m.from == marks }

func (m *mergeLog) forget(gone []mergeKey) {
	if len(gone) == 0 {
		return
	}
	if m.deleted == nil {
		m.deleted = map[mergeKey]bool{}
	}
	for _, k := range gone {
		m.deleted[k] = true
	}
}

// restart begins a new log at the watermarks a merge just committed.
func (m *mergeLog) restart() {
	if m.merged == nil {
		m.valid = false
		return
	}
	m.valid, m.from, m.merged = true, *m.merged, nil
	m.entries = m.entries[:0]
	m.deleted = nil
}
