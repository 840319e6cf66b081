package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
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

// pendingRec is a record ready to be written but for sealing its personal
// fields, which needs the subject's data key and so a write transaction.
type pendingRec struct {
	st     stored
	fields []Field
	refs   []subjectRef // refs[i] is the subject of fields[i]
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
	req := &appendReq{recs: make([]pendingRec, len(ps)), done: make(chan struct{})}
	ids := make([]string, len(ps))
	now := time.Now()
	for i, p := range ps {
		pub, personal, err := p.split()
		if err != nil {
			return nil, err
		}
		pj, err := json.Marshal(pub)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidRecord, p.RecordType(), err)
		}
		id := ulid.Make()
		r := &req.recs[i]
		r.st = stored{typ: p.RecordType(), id: id, created: now.UnixMilli(), public: pj}
		r.fields = personal
		r.refs = make([]subjectRef, len(personal))
		for j, f := range personal {
			r.fields[j].Subject = s.Subject(f.Subject)
			if f.Name == "subject" {
				// A field that names the subject itself is kept in the
				// form the subject is filed under, so the platform
				// sees one spelling of each person.
				r.fields[j].Value = jsonString(r.fields[j].Subject)
			}
			r.refs[j] = s.keys.ref(r.fields[j].Subject)
			req.size += len(f.Name) + len(f.Value) + sealOver + 64
		}
		req.size += r.st.size() + 64
		ids[i] = id.String()
	}
	s.appending.Add(1)
	defer s.appending.Add(-1)
	// closeMu keeps Close from stopping the committer between our check
	// and our send: a request queued after it drained would wait forever.
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, ErrClosed
	}
	select {
	case s.appendCh <- req:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return nil, ctx.Err()
	}
	s.closeMu.RUnlock()
	// Once queued, the record may be committed whatever ctx says, so wait
	// for the outcome instead of reporting a failure that did not happen.
	<-req.done
	if req.err != nil {
		return nil, req.err
	}
	return ids, nil
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
					s.commit([]*appendReq{r})
				default:
					return
				}
			}
		}
		s.commit(s.gather(batch))
	}
}

// maxGather bounds how long a commit waits for appenders that are about to
// queue; it is small against an fsync (hundreds of microseconds).
const maxGather = 100 * time.Microsecond

// gather adds to batch the requests of appenders already inside Append. The
// appenders woken by the last commit are still preparing their next record
// when the committer comes back; without a short wait for them each commit
// would carry one or two records and the fsyncs would not be shared.
func (s *Store) gather(batch []*appendReq) []*appendReq {
	n := len(batch[0].recs)
	var deadline time.Time
	for n < maxGroup {
		select {
		case r := <-s.appendCh:
			batch = append(batch, r)
			n += len(r.recs)
			continue
		default:
		}
		if s.appending.Load() <= int64(len(batch)) {
			break
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(maxGather)
		} else if time.Now().After(deadline) {
			break
		}
		runtime.Gosched()
	}
	return batch
}

func (s *Store) commit(batch []*appendReq) {
	var created []subjectRef
	var added [TypeReceipt + 1]int
	err := s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			// Pages freed by copy-on-write are reused, so what counts
			// against the cap is the file less its free pages.
			used := tx.Size() - s.freeBytes()
			for _, req := range batch {
				if used+int64(req.size) > s.opts.MaxSize {
					req.err = fmt.Errorf("%w: %s is at its cap of %d MiB; records wait until the platform takes some", ErrFull, s.path, s.opts.MaxSize>>20)
					continue
				}
				if err := s.putLocked(tx, req, &created); err != nil {
					return err
				}
				for _, r := range req.recs {
					added[r.st.typ]++
				}
				used += int64(req.size)
			}
			return nil
		})
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
	if err != nil {
		// The keys made in the failed transaction never reached the file.
		s.cacheMu.Lock()
		for _, ref := range created {
			delete(s.dataKeys, ref)
		}
		s.cacheMu.Unlock()
	}
	for _, req := range batch {
		close(req.done)
	}
}

// freeBytes is what bbolt can reuse inside the file without growing it.
func (s *Store) freeBytes() int64 {
	st := s.db.Stats()
	return int64(st.FreePageN+st.PendingPageN) * int64(s.db.Info().PageSize)
}

func (s *Store) putLocked(tx *bolt.Tx, req *appendReq, created *[]subjectRef) error {
	ids := tx.Bucket(bucketIDs)
	// Outbox keys and record ids (ULIDs, monotonic) only ever grow, so
	// leaves can be filled before they split; bbolt's default of half
	// would leave every outbox page half empty.
	ids.FillPercent = appendFill
	idx := tx.Bucket(bucketSubjects)
	var buf []byte
	for i := range req.recs {
		r := &req.recs[i]
		r.st.parts = r.st.parts[:0]
		for j, f := range r.fields {
			dk, err := s.dataKeyLocked(tx, r.refs[j], created)
			if err != nil {
				return err
			}
			sealed, err := sealField(dk, r.st.id, r.refs[j], f)
			if err != nil {
				return err
			}
			r.st.parts = append(r.st.parts, sealedPart{ref: r.refs[j], sealed: sealed})
		}
		ob := tx.Bucket(outboxBucket(r.st.typ))
		ob.FillPercent = appendFill
		seq, err := ob.NextSequence()
		if err != nil {
			return err
		}
		buf = r.st.appendTo(buf[:0])
		// bbolt keeps a reference to the value until commit: give it its own copy.
		if err := ob.Put(seqKey(seq), bytes.Clone(buf)); err != nil {
			return err
		}
		if err := ids.Put(r.st.id[:], idValue(r.st.typ, seq)); err != nil {
			return err
		}
		for j, ref := range r.refs {
			if j > 0 && containsRef(r.refs[:j], ref) {
				continue
			}
			if err := idx.Put(indexKey(ref, r.st.typ, seq), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func containsRef(refs []subjectRef, r subjectRef) bool {
	for _, x := range refs {
		if x == r {
			return true
		}
	}
	return false
}

// dataKeyLocked returns the subject's data key, creating and storing it in
// tx if the subject has none. It runs only inside write transactions, which
// bbolt serialises, so the cache and the keys bucket move together.
func (s *Store) dataKeyLocked(tx *bolt.Tx, ref subjectRef, created *[]subjectRef) ([]byte, error) {
	s.cacheMu.Lock()
	dk, ok := s.dataKeys[ref]
	s.cacheMu.Unlock()
	if ok {
		return dk, nil
	}
	kb := tx.Bucket(bucketKeys)
	if w := kb.Get(ref[:]); w != nil {
		var err error
		if dk, err = s.keys.unwrapDataKey(ref, w); err != nil {
			return nil, err
		}
	} else {
		var err error
		if dk, err = newKey(); err != nil {
			return nil, err
		}
		w, err := s.keys.wrapDataKey(ref, dk)
		if err != nil {
			return nil, err
		}
		if err := kb.Put(ref[:], w); err != nil {
			return nil, err
		}
		*created = append(*created, ref)
	}
	s.cacheMu.Lock()
	s.dataKeys[ref] = dk
	s.cacheMu.Unlock()
	return dk, nil
}

// keyReader opens sealed fields inside a read transaction. It unwraps keys
// from the transaction's own snapshot, never from the shared cache, so a
// reader that overlaps an erase sees exactly its snapshot.
type keyReader struct {
	s    *Store
	tx   *bolt.Tx
	keys map[subjectRef][]byte
}

func (k *keyReader) open(st *stored, p sealedPart) (Field, error) {
	dk, ok := k.keys[p.ref]
	if !ok {
		w := k.tx.Bucket(bucketKeys).Get(p.ref[:])
		if w == nil {
			return Field{}, fmt.Errorf("%w: record %s: data key missing", ErrCorrupt, ulid.ULID(st.id))
		}
		var err error
		if dk, err = k.s.keys.unwrapDataKey(p.ref, w); err != nil {
			return Field{}, fmt.Errorf("record %s: %w", ulid.ULID(st.id), err)
		}
		if k.keys == nil {
			k.keys = make(map[subjectRef][]byte)
		}
		k.keys[p.ref] = dk
	}
	name, value, err := openField(dk, st.id, p.ref, p.sealed)
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
			kr := keyReader{s: s, tx: tx}
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
	var removed [TypeReceipt + 1]int
	err := s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			removed = [TypeReceipt + 1]int{}
			touched := map[subjectRef]bool{}
			for _, id := range ids {
				u, err := ulid.ParseStrict(id)
				if err != nil {
					return fmt.Errorf("ack %q: %w", id, err)
				}
				t, seq, ok := lookupID(tx, u)
				if !ok {
					continue
				}
				refs, err := deleteRecord(tx, t, seq, u)
				if err != nil {
					return err
				}
				for _, r := range refs {
					touched[r] = true
				}
				removed[t]++
			}
			for ref := range touched {
				if err := s.dropKeyIfUnusedLocked(tx, ref); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
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
	return n, nil
}

func lookupID(tx *bolt.Tx, id ulid.ULID) (Type, uint64, bool) {
	v := tx.Bucket(bucketIDs).Get(id[:])
	if len(v) != 9 {
		return 0, 0, false
	}
	return Type(v[0]), binary.BigEndian.Uint64(v[1:]), true
}

// deleteRecord removes a record with its id and index entries and returns
// the subjects it held fields of.
func deleteRecord(tx *bolt.Tx, t Type, seq uint64, id ulid.ULID) ([]subjectRef, error) {
	if !t.valid() {
		return nil, fmt.Errorf("%w: id %s points to type %d", ErrCorrupt, id, t)
	}
	ob := tx.Bucket(outboxBucket(t))
	key := seqKey(seq)
	var refs []subjectRef
	if v := ob.Get(key); v != nil {
		st, err := decodeStored(v)
		if err != nil {
			return nil, fmt.Errorf("%s outbox seq %d: %w", t, seq, err)
		}
		for _, p := range st.parts {
			if !containsRef(refs, p.ref) {
				refs = append(refs, p.ref)
			}
		}
		if err := ob.Delete(key); err != nil {
			return nil, err
		}
	}
	idx := tx.Bucket(bucketSubjects)
	for _, ref := range refs {
		if err := idx.Delete(indexKey(ref, t, seq)); err != nil {
			return nil, err
		}
	}
	return refs, tx.Bucket(bucketIDs).Delete(id[:])
}

// dropKeyIfUnusedLocked destroys a subject's data key once no record holds
// a field of it: the device keeps personal data no longer than it must.
func (s *Store) dropKeyIfUnusedLocked(tx *bolt.Tx, ref subjectRef) error {
	k, _ := tx.Bucket(bucketSubjects).Cursor().Seek(ref[:])
	if k != nil && bytes.HasPrefix(k, ref[:]) {
		return nil
	}
	if err := tx.Bucket(bucketKeys).Delete(ref[:]); err != nil {
		return err
	}
	s.cacheMu.Lock()
	delete(s.dataKeys, ref)
	s.cacheMu.Unlock()
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
