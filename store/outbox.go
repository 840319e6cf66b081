package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/leadport/leadport-agent/store/phone"
	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"
)

// appendFill is the fill factor for buckets whose keys only grow.
const appendFill = 0.95

// maxGroup bounds one group commit, so a burst of appenders cannot build a
// transaction that holds the writer lock for long.
const maxGroup = 4096

type appendReq struct {
	recs []pendingRec
	size int
	err  error
	done chan struct{}
}

// pendingRec is a record encoded and sealed by its appender, ready to be
// written but for its sequence, which only the committer can give.
type pendingRec struct {
	typ Type
	buf []byte // the encoded record, sequence bytes of its id zero
	id  [16]byte
	// callID is the call a usage record meters: storing the record ends
	// the call's entry among the calls in progress.
	callID string
	size   int // bytes it will take, for the size cap
	// parts are the subjects the record holds fields of, with their
	// wrapped keys, for the index merge.
	parts []partRef
	// unsealed is set instead of buf when a field's subject may have a key
	// in the key bucket that memory lacks: the committer finds or makes
	// the key in its transaction (a read transaction here would cost more
	// than the sealing it moves off the committer).
	unsealed *unsealedRec
}

type unsealedRec struct {
	st     stored // parts sealed so far
	fields []Field
	refs   []subjectRef
}

// Subject returns the form of raw that the store files personal data under:
// E.164 where raw is a phone number, else raw trimmed and lower-cased (a SIP
// user name, an e-mail address).
func (s *Store) Subject(raw string) string {
	if n, err := phone.Normalize(raw, s.opts.DefaultCountry); err == nil {
		return n
	}
	return strings.ToLower(strings.TrimSpace(raw))
}

// Append stores records and returns their ids once they are durable on disk.
// Records of one type keep the order in which they were appended. Appends
// from concurrent callers share a transaction and an fsync.
func (s *Store) Append(ctx context.Context, ps ...Payload) ([]string, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	// Counted from the start, so a commit waits the few microseconds this
	// appender needs to join it (see gather).
	s.appending.Add(1)
	defer func() {
		if s.appending.Add(-1) <= s.gatherWant.Load() {
			select {
			case s.left <- struct{}{}:
			default:
			}
		}
	}()
	req := &appendReq{recs: make([]pendingRec, len(ps)), done: make(chan struct{})}
	ids := make([]string, len(ps))
	now := time.Now()
	for i, p := range ps {
		r, err := s.prepare(now, p)
		if err != nil {
			return nil, err
		}
		req.recs[i] = r
		req.size += r.size + 64
	}
	// closeMu keeps Close from stopping the committer between our check
	// and our send: a request queued after it drained would wait forever.
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, ErrClosed
	}
	if s.appending.Load() == 1 && len(s.appendCh) == 0 && s.commitMu.TryLock() {
		// The only appender, and the committer idle: it would take this
		// request and commit it at once, with nobody to gather, two
		// goroutine hand-offs later. Each hand-off wakes a sleeping
		// thread, which at a few commits a second (the agent's record
		// writer, alone here) cost more than the commit's own work.
		s.commit([]*appendReq{req})
		s.commitMu.Unlock()
	} else {
		select {
		case s.appendCh <- req:
		case <-ctx.Done():
			s.closeMu.RUnlock()
			return nil, ctx.Err()
		}
	}
	s.closeMu.RUnlock()
	// Once queued, the record may be committed whatever ctx says, so wait
	// for the outcome instead of reporting a failure that did not happen.
	<-req.done
	if req.err != nil {
		return nil, req.err
	}
	for i := range req.recs {
		ids[i] = ulid.ULID(req.recs[i].id).String()
	}
	return ids, nil
}

// prepare does all of an append that needs no transaction, in the
// appender's goroutine, so appenders use every core and the committer only
// numbers and writes: validation, JSON, subjects, keys and sealing.
func (s *Store) prepare(now time.Time, p Payload) (pendingRec, error) {
	r, err := s.sealRecord(now, p)
	if u, ok := p.(*Usage); ok {
		r.callID = CallKey(u.CallID, u.Hairpin)
	}
	return r, err
}

func (s *Store) sealRecord(now time.Time, p Payload) (pendingRec, error) {
	pub, personal, err := p.split()
	if err != nil {
		return pendingRec{}, err
	}
	pj, err := json.Marshal(pub)
	if err != nil {
		return pendingRec{}, fmt.Errorf("%w: %s: %v", ErrInvalidRecord, p.RecordType(), err)
	}
	st := stored{typ: p.RecordType(), created: now.UnixMilli(), public: pj}
	if st.id, err = makeID(now, st.typ, 0); err != nil {
		return pendingRec{}, err
	}
	var later *unsealedRec
	for _, f := range personal {
		f.Subject = s.Subject(f.Subject)
		if f.Name == "subject" {
			// A field that names the subject itself is kept in the form
			// the subject is filed under, so the platform sees one
			// spelling of each person.
			f.Value = jsonString(f.Subject)
		}
		ref := s.keys.ref(f.Subject)
		dk, err := s.appenderKey(ref)
		if err != nil {
			return pendingRec{}, err
		}
		if dk == nil || later != nil {
			if later == nil {
				later = &unsealedRec{}
			}
			later.fields = append(later.fields, f)
			later.refs = append(later.refs, ref)
			continue
		}
		sealed, err := sealField(dk.key, st.id, ref, f)
		if err != nil {
			return pendingRec{}, err
		}
		st.parts = append(st.parts, sealedPart{ref: ref, wrapped: dk.wrapped, sealed: sealed})
	}
	if later != nil {
		later.st = st
		size := st.size()
		for _, f := range later.fields {
			size += len(subjectRef{}) + len(f.Name) + len(f.Value) + 2*sealOver + keySize + 2*binary.MaxVarintLen32
		}
		return pendingRec{typ: st.typ, id: st.id, size: size, unsealed: later}, nil
	}
	var parts []partRef
	for _, p := range st.parts {
		parts = append(parts, partRef{ref: p.ref, wrapped: p.wrapped})
	}
	buf := st.encode()
	return pendingRec{typ: st.typ, buf: buf, id: st.id, size: len(buf), parts: parts}, nil
}

// committer runs group commits until Close. While one commit is on disk the
// next appenders queue up, and the following commit takes them all: the
// batch grows with the load and a lone appender never waits for a timer.
func (s *Store) committer() {
	defer close(s.done)
	batch := make([]*appendReq, 0, 64)
	for {
		select {
		case r := <-s.appendCh:
			batch = append(batch[:0], r)
		case <-s.stop:
			// Finish what was queued before Close.
			for {
				select {
				case r := <-s.appendCh:
					s.commitMu.Lock()
					s.commit([]*appendReq{r})
					s.commitMu.Unlock()
				default:
					return
				}
			}
		}
		batch = s.gather(batch)
		s.commitMu.Lock()
		s.commit(batch)
		s.commitMu.Unlock()
	}
}

// maxGather bounds how long a commit waits for appenders that are about to
// queue; it is small against an fsync (hundreds of microseconds).
const maxGather = 300 * time.Microsecond

// gather adds to batch the requests of appenders already inside Append. The
// appenders woken by the last commit are still preparing their next record
// when the committer comes back; without a short wait for them each commit
// would carry half of them, and the other half the next. The committer
// waits blocked, not spinning: on two cores a spinning committer took the
// CPU those appenders needed and commits left a seventh of them behind.
func (s *Store) gather(batch []*appendReq) []*appendReq {
	n := len(batch[0].recs)
	var timeout <-chan time.Time
	for n < maxGroup {
		select {
		case r := <-s.appendCh:
			batch = append(batch, r)
			n += len(r.recs)
			continue
		default:
		}
		// Published before the check, so an appender returning after
		// the check sees it and wakes us.
		s.gatherWant.Store(int64(len(batch)))
		if s.appending.Load() <= int64(len(batch)) {
			break
		}
		if timeout == nil {
			t := time.NewTimer(maxGather)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case r := <-s.appendCh:
			batch = append(batch, r)
			n += len(r.recs)
		case <-s.left:
			// An appender returned: it may have been the one waited for.
		case <-timeout:
			s.gatherWant.Store(-1)
			return batch
		}
	}
	s.gatherWant.Store(-1)
	return batch
}

func (s *Store) commit(batch []*appendReq) {
	var added [TypeReceipt + 1]int
	err := s.locked(func() error {
		var logged []mergeEntry
		err := s.update(func(tx *bolt.Tx) error {
			logged = logged[:0]
			// Pages freed by copy-on-write are reused, so what counts
			// against the cap is the file less its free pages.
			used := tx.Size() - s.freeBytes()
			for _, req := range batch {
				if used+int64(req.size) > s.opts.MaxSize {
					req.err = fmt.Errorf("%w: %s is at its cap of %d MiB; records wait until the platform takes some", ErrFull, s.path, s.opts.MaxSize>>20)
					continue
				}
				if err := s.putLocked(tx, req, &logged); err != nil {
					return err
				}
				for _, r := range req.recs {
					added[r.typ]++
				}
				used += int64(req.size)
			}
			if now := time.Now(); now.Sub(s.trimmedAt) >= trimEvery {
				s.trimmedAt = now
				if err := trimMap(s.db, tx); err != nil {
					s.log.Debug("could not trim the store's map", "err", err)
				}
			}
			return nil
		})
		if err == nil {
			s.mlog.entries = append(s.mlog.entries, logged...)
		}
		return err
	})
	s.statsMu.Lock()
	for _, req := range batch {
		if err != nil && req.err == nil {
			req.err = fmt.Errorf("store: append: %w", err)
		}
		if errors.Is(req.err, ErrFull) {
			s.full = true
		}
	}
	if err == nil {
		s.commits.Add(1)
		for t, n := range added {
			s.pending[t] += n
			s.committed.Add(uint64(n))
		}
		if added != [TypeReceipt + 1]int{} {
			s.full = false
		}
	}
	s.statsMu.Unlock()
	for _, req := range batch {
		close(req.done)
	}
	if err == nil {
		n := 0
		for _, c := range added {
			n += c
		}
		s.keyMu.Lock()
		fresh := len(s.fresh)
		s.keyMu.Unlock()
		if s.unmerged.Add(int64(n)) >= int64(s.opts.mergeEvery) || fresh >= maxFreshKeys {
			// Appenders queue meanwhile; a failed merge is retried
			// after the next commit, and the records are safe either
			// way: they carry their keys.
			if err := s.locked(func() error { return s.updateMerged(nil) }); err != nil {
				s.mergeFailures.failed(s.log, time.Now(), err)
			} else {
				s.mergeFailures.succeeded(s.log)
			}
		}
		if s.runWork.Load() {
			s.runCredit = min(s.runCredit+runCreditPerRecord*n, s.opts.runStep)
			if s.runCredit == s.opts.runStep {
				s.runCredit = 0
				if err := s.locked(s.stepRuns); err != nil {
					s.stepFailures.failed(s.log, time.Now(), err)
				} else {
					s.stepFailures.succeeded(s.log)
				}
			}
		}
	}
}

// freeBytes is what bbolt can reuse inside the file without growing it.
func (s *Store) freeBytes() int64 {
	st := s.db.Stats()
	return int64(st.FreePageN+st.PendingPageN) * int64(s.db.Info().PageSize)
}

func (s *Store) putLocked(tx *bolt.Tx, req *appendReq, logged *[]mergeEntry) error {
	for i := range req.recs {
		r := &req.recs[i]
		ob := tx.Bucket(outboxBucket(r.typ))
		// Outbox keys only ever grow, so leaves can be filled before they
		// split; bbolt's default of half would leave every page half empty.
		ob.FillPercent = appendFill
		seq, err := ob.NextSequence()
		if err != nil {
			return err
		}
		if u := r.unsealed; u != nil {
			for j, f := range u.fields {
				dk, err := s.dataKeyLocked(tx, u.refs[j])
				if err != nil {
					return err
				}
				sealed, err := sealField(dk.key, r.id, u.refs[j], f)
				if err != nil {
					return err
				}
				u.st.parts = append(u.st.parts, sealedPart{ref: u.refs[j], wrapped: dk.wrapped, sealed: sealed})
			}
			r.parts = r.parts[:0]
			for _, p := range u.st.parts {
				r.parts = append(r.parts, partRef{ref: p.ref, wrapped: p.wrapped})
			}
			r.buf, r.unsealed = u.st.encode(), nil
		}
		for j, p := range r.parts {
			if slices.ContainsFunc(r.parts[:j], func(q partRef) bool { return q.ref == p.ref }) {
				continue
			}
			*logged = append(*logged, mergeEntry{ref: p.ref, wrapped: p.wrapped, typ: r.typ, seq: seq})
		}
		if r.callID != "" {
			// In this transaction, so that no crash leaves a call both
			// metered and in progress (metered twice after a restart).
			if err := tx.Bucket(bucketCalls).Delete([]byte(r.callID)); err != nil {
				return err
			}
		}
		setIDSeq(r.id[:], seq)
		copy(r.buf[idOffset:idOffset+len(r.id)], r.id[:])
		// r.buf stays untouched until the commit is done, as bbolt needs.
		if err := ob.Put(seqKey(seq), r.buf); err != nil {
			return err
		}
	}
	return nil
}

// keyReader opens sealed fields with the data key each part carries, so
// reading needs neither the key bucket nor the writer's cache, and a reader
// that overlaps an erase sees exactly its snapshot.
type keyReader struct {
	s    *Store
	keys map[subjectRef]*dataKey // unwrapped during this read
}

func (k *keyReader) open(st *stored, p sealedPart) (Field, error) {
	dk := k.keys[p.ref]
	if dk == nil || !bytes.Equal(dk.wrapped, p.wrapped) {
		key, err := k.s.keys.unwrapDataKey(p.ref, p.wrapped)
		if err != nil {
			return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(st.id), err)
		}
		if k.keys == nil {
			k.keys = make(map[subjectRef]*dataKey)
		}
		dk = &dataKey{key: key, wrapped: p.wrapped}
		k.keys[p.ref] = dk
	}
	name, value, err := openField(dk.key, st.id, p.ref, p.sealed)
	if err != nil {
		return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(st.id), err)
	}
	return Field{Name: name, Value: value}, nil
}

// record turns a stored record into a Record, opening the personal parts
// that keep says to (all when keep is nil).
func (k *keyReader) record(seq uint64, st *stored, keep func(subjectRef) bool) (Record, error) {
	r := Record{
		ID:      ulid.ULID(st.id).String(),
		Type:    st.typ,
		Seq:     seq,
		Created: time.UnixMilli(st.created).UTC(),
		Public:  bytes.Clone(st.public),
	}
	for _, p := range st.parts {
		if keep != nil && !keep(p.ref) {
			continue
		}
		f, err := k.open(st, p)
		if err != nil {
			return Record{}, err
		}
		r.Personal = append(r.Personal, f)
	}
	return r, nil
}

// ReadOptions bound one Pending read.
type ReadOptions struct {
	After    uint64 // only records with a larger Seq
	Limit    int    // at most this many records; 0: no limit
	MaxBytes int    // stop once this many bytes of record data are read; 0: no limit (at least one record is returned)
}

// Pending returns records of type t not yet acknowledged, oldest first.
func (s *Store) Pending(t Type, o ReadOptions) ([]Record, error) {
	if !t.valid() {
		return nil, fmt.Errorf("store: pending: unknown type %d", t)
	}
	var out []Record
	err := s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			kr := keyReader{s: s}
			c := tx.Bucket(outboxBucket(t)).Cursor()
			total := 0
			for k, v := c.Seek(seqKey(o.After + 1)); k != nil; k, v = c.Next() {
				if o.Limit > 0 && len(out) >= o.Limit {
					break
				}
				if o.MaxBytes > 0 && len(out) > 0 && total+len(v) > o.MaxBytes {
					break
				}
				seq := binary.BigEndian.Uint64(k)
				st, err := decodeStored(v)
				if err != nil {
					return fmt.Errorf("%s outbox seq %d: %w", t, seq, err)
				}
				r, err := kr.record(seq, st, nil)
				if err != nil {
					return err
				}
				total += len(v)
				out = append(out, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return out, nil
}

// Ack removes delivered records. Unknown ids are skipped: delivery is
// at-least-once, so the same id may be acknowledged twice. It returns how
// many records it removed.
func (s *Store) Ack(ids ...string) (int, error) {
	type loc struct {
		id  ulid.ULID
		t   Type
		seq uint64
	}
	locs := make([]loc, 0, len(ids))
	for _, id := range ids {
		u, t, seq, err := parseID(id)
		if err != nil {
			return 0, fmt.Errorf("store: ack: %w", err)
		}
		locs = append(locs, loc{u, t, seq})
	}
	var removed [TypeReceipt + 1]int
	err := s.locked(func() error {
		var gone []mergeKey
		err := s.update(func(tx *bolt.Tx) error {
			removed = [TypeReceipt + 1]int{}
			gone = gone[:0]
			touched := map[subjectRef]bool{}
			for _, l := range locs {
				if !l.t.valid() {
					continue
				}
				refs, ok, err := deleteRecord(tx, l.t, l.seq, l.id)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				if l.seq > watermark(tx, l.t) {
					gone = append(gone, mergeKey{l.t, l.seq})
				}
				for _, r := range refs {
					touched[r] = true
				}
				removed[l.t]++
			}
			for ref := range touched {
				if err := s.dropKeyIfUnusedLocked(tx, ref); err != nil {
					return err
				}
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

// deleteRecord removes the record at (t, seq) if it carries id, with its
// index entries when it was merged into the index, and returns the subjects
// it held fields of.
func deleteRecord(tx *bolt.Tx, t Type, seq uint64, id ulid.ULID) (refs []subjectRef, ok bool, err error) {
	ob := tx.Bucket(outboxBucket(t))
	key := seqKey(seq)
	v := ob.Get(key)
	if v == nil {
		return nil, false, nil
	}
	st, err := decodeStored(v)
	if err != nil {
		return nil, false, fmt.Errorf("%s outbox seq %d: %w", t, seq, err)
	}
	if st.id != id {
		return nil, false, nil
	}
	for _, p := range st.parts {
		if !slices.Contains(refs, p.ref) {
			refs = append(refs, p.ref)
		}
	}
	if err := ob.Delete(key); err != nil {
		return nil, false, err
	}
	if seq <= watermark(tx, t) {
		for _, ref := range refs {
			if _, err := indexRuns.delete(tx, indexKey(ref, t, seq)); err != nil {
				return nil, false, err
			}
		}
	}
	return refs, true, nil
}

// dropKeyIfUnusedLocked destroys a subject's data key once the index holds
// no record of it: the device keeps nothing about a person once the
// platform has it. A record not yet merged carries the key itself, and the
// next merge puts it back.
func (s *Store) dropKeyIfUnusedLocked(tx *bolt.Tx, ref subjectRef) error {
	if indexRuns.hasPrefix(tx, ref[:]) {
		return nil
	}
	if _, err := keyRuns.delete(tx, ref[:]); err != nil {
		return err
	}
	s.keyMu.Lock()
	delete(s.cache, ref)
	s.keyMu.Unlock()
	return nil
}

// TypeStats describes one outbox.
type TypeStats struct {
	Pending       int       `json:"pending"`
	OldestCreated time.Time `json:"oldest_created,omitzero"`
}

// Stats is the store's state for status pages and metrics.
type Stats struct {
	Path      string               `json:"path"`
	SizeBytes int64                `json:"size_bytes"`
	MaxBytes  int64                `json:"max_bytes"`
	Full      bool                 `json:"full"`
	Commits   uint64               `json:"commits"`           // group commits since Open
	Committed uint64               `json:"records_committed"` // records they carried
	Outbox    map[string]TypeStats `json:"outbox"`
}

// Stats reports pending records per type, the age of the oldest, and the
// file's size against its cap.
func (s *Store) Stats() (Stats, error) {
	st := Stats{Path: s.path, MaxBytes: s.opts.MaxSize, Outbox: map[string]TypeStats{},
		Commits: s.commits.Load(), Committed: s.committed.Load()}
	err := s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			st.SizeBytes = tx.Size()
			for _, t := range Types {
				var ts TypeStats
				if _, v := tx.Bucket(outboxBucket(t)).Cursor().First(); v != nil {
					if d, err := decodeStored(v); err == nil {
						ts.OldestCreated = time.UnixMilli(d.created).UTC()
					}
				}
				st.Outbox[t.String()] = ts
			}
			return nil
		})
	})
	if err != nil {
		return Stats{}, fmt.Errorf("store: %w", err)
	}
	s.statsMu.Lock()
	st.Full = s.full
	for _, t := range Types {
		ts := st.Outbox[t.String()]
		ts.Pending = s.pending[t]
		st.Outbox[t.String()] = ts
	}
	s.statsMu.Unlock()
	return st, nil
}

// removedFromOutboxes takes records removed from the outboxes (by type) off
// the pending counts, and returns how many they were. Room made clears
// the full flag: the next append may fit.
func (s *Store) removedFromOutboxes(removed *[TypeReceipt + 1]int) int {
	n := 0
	s.statsMu.Lock()
	for t, c := range removed {
		s.pending[t] -= c
		n += c
	}
	if n > 0 {
		s.full = false
	}
	s.statsMu.Unlock()
	return n
}
