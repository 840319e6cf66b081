package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the store's file inside the data directory.
const FileName = "agent.db"

// KeyFileName is the default device key file inside the data directory.
const KeyFileName = "device.key"

// SchemaVersion is the layout this code writes. A file with a higher version
// was written by a newer agent and is refused rather than misread.
const SchemaVersion = 2

// DefaultMaxSize fits 32-bit devices: bbolt maps the whole file, and
// compaction maps a second copy beside it, within a 2 GiB address space.
const DefaultMaxSize = 256 << 20

// Errors callers tell apart.
var (
	ErrClosed      = errors.New("store closed")
	ErrFull        = errors.New("store is full")
	ErrNewerSchema = errors.New("store was written by a newer agent")
	ErrLocked      = errors.New("store is in use by another process")
)

var (
	bucketMeta = []byte("meta")
	// Schema 1's subject index and key table; schema 2 keeps them as
	// runs (see sortedRuns).
	bucketSubjects = []byte("subjects") // ref | type | seq -> nothing
	bucketKeys     = []byte("keys")     // ref -> wrapped data key
	bucketLedger   = []byte("ledger")   // command id -> expiry (unix s)
	bucketPolicy   = []byte("policy")
	bucketCalls    = []byte("calls") // Call-ID -> the agent's document of a call in progress

	metaSchema         = []byte("schema")
	metaKeyCheck       = []byte("key_check")
	metaDeviceID       = []byte("device_id")
	metaCompactPending = []byte("compact_pending")
	metaCallsAt        = []byte("calls_at")
)

func outboxBucket(t Type) []byte { return []byte("outbox." + t.String()) }

// Options configure Open.
type Options struct {
	// Dir is the data directory; it is created (mode 0700) if missing.
	Dir string
	// KeyFile is the device key; default Dir/device.key.
	KeyFile string
	// MaxSize caps the file: past it appends fail with ErrFull and nothing
	// stored is dropped. Default DefaultMaxSize.
	MaxSize int64
	// DefaultCountry is the calling code used to normalise national numbers
	// when they become subjects (see store/phone).
	DefaultCountry string
	// Logger receives the store's few log lines; default slog.Default().
	Logger *slog.Logger

	// crashPoint, when set (tests only, see export_test.go), is called at
	// named points of an erase, where crash tests stop the process.
	crashPoint func(name string)
	// mergeEvery replaces the const of that name, so tests see many merges.
	mergeEvery int
	// runStep replaces the const of that name, so tests see merges of
	// runs cut short.
	runStep int
}

// Store is the agent's bbolt store. Its methods are safe for concurrent use.
type Store struct {
	path    string
	opts    Options
	log     *slog.Logger
	keys    deviceKeys
	boltOpt *bolt.Options

	// mu guards db: every operation holds it shared; compaction holds it
	// exclusively while it replaces the file. Lock order: mu, then keyMu,
	// then statsMu.
	mu sync.RWMutex
	db *bolt.DB

	// closeMu guards closed; Append holds it shared while it queues (or
	// commits, see commitMu).
	closeMu sync.RWMutex
	closed  bool
	// commitMu is held by whoever commits: the committer, or a lone
	// appender that commits its own request (see Append).
	commitMu sync.Mutex

	appendCh  chan *appendReq
	appending atomic.Int64  // callers inside Append; see gather
	left      chan struct{} // an appender returned; see gather
	// gatherWant is the batch a gathering committer waits to see
	// appending fall to; -1 when it is not waiting.
	gatherWant atomic.Int64
	commits    atomic.Uint64 // group commits done
	committed  atomic.Uint64 // records they carried
	stop       chan struct{}
	done       chan struct{}
	stopOnce   sync.Once

	// keyMu guards cache and fresh, unwrapped data keys, and keyFilter.
	// fresh holds the keys made since the last index merge (by appenders
	// for subjects the filter rules out, else in write transactions),
	// which live only in their records' parts until the merge copies them
	// to the key bucket; cache holds keys read from the key bucket.
	// unmerged counts records written since the last merge.
	keyMu    sync.Mutex
	cache    map[subjectRef]*dataKey
	fresh    map[subjectRef]*dataKey
	unmerged atomic.Int64
	// runWork says the runs may call for a merge step (see stepRuns);
	// runCredit is how many entries the next step may write, earned by
	// records committed, guarded by commitMu.
	runWork   atomic.Bool
	runCredit int
	// mergeFailures and stepFailures keep the retries of a failing index
	// merge or merge step (a full disk) from flooding the log; guarded by
	// commitMu.
	mergeFailures, stepFailures failureLog
	// trimmedAt is when a commit last dropped bbolt's map from the
	// resident set (trimMap), guarded by commitMu.
	trimmedAt time.Time
	// keyFilter spares a key bucket search for subjects never seen; nil
	// until the first merge builds it. Only write transactions change it.
	keyFilter *keyFilter
	// mlog is what the next index merge must file, gathered by the
	// commits since the last merge, so that the merge need not read and
	// decode every record again (it did: a fifth of the append path).
	// Only write transactions touch it.
	mlog mergeLog

	statsMu sync.Mutex
	pending [TypeReceipt + 1]int
	full    bool
}

// Open opens (or creates) the store in opts.Dir.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("store: no data directory")
	}
	if opts.KeyFile == "" {
		opts.KeyFile = filepath.Join(opts.Dir, KeyFileName)
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.mergeEvery <= 0 {
		opts.mergeEvery = mergeEvery
	}
	if opts.runStep <= 0 {
		opts.runStep = runStep
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: data directory: %w", err)
	}
	s := &Store{
		path:          filepath.Join(opts.Dir, FileName),
		opts:          opts,
		log:           opts.Logger.With("component", "store"),
		mergeFailures: failureLog{what: "merging the subject index"},
		stepFailures:  failureLog{what: "merging subject index runs"},
		cache:         make(map[subjectRef]*dataKey),
		fresh:         make(map[subjectRef]*dataKey),
		appendCh:      make(chan *appendReq, 1024),
		left:          make(chan struct{}, 1),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
		boltOpt: &bolt.Options{
			// A second agent on the same directory must fail fast and
			// say why, not hang on the file lock.
			Timeout:      2 * time.Second,
			FreelistType: bolt.FreelistMapType,
			// Not writing the freelist saves pages on every commit; Open
			// rebuilds it by scanning the file (etcd does the same).
			NoFreelistSync: true,
		},
	}
	// A leftover compaction copy is incomplete by definition: the rename
	// that would have made it the store never happened.
	if err := os.Remove(s.compactPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: remove stale %s: %w", s.compactPath(), err)
	}
	if err := s.openDB(); err != nil {
		return nil, err
	}
	if err := s.init(); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.loadCounts(); err != nil {
		s.db.Close()
		return nil, err
	}
	s.gatherWant.Store(-1)
	// A merge of runs may have been left half written, or called for.
	s.runWork.Store(true)
	go s.committer()
	return s, nil
}

func (s *Store) compactPath() string { return s.path + ".compact" }

// Path is the store file.
func (s *Store) Path() string { return s.path }

// openDB opens the bbolt file, turning bbolt's panics on damaged pages into
// an error that names the file.
func (s *Store) openDB() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store %s: %w: %v", s.path, ErrCorrupt, r)
		}
	}()
	db, err := bolt.Open(s.path, 0o600, s.boltOpt)
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("store %s: %w", s.path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return fmt.Errorf("store %s: %w: %v", s.path, ErrCorrupt, err)
	case err != nil:
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	s.db = db
	return nil
}

// init creates the buckets, checks the schema and the device key, and
// finishes a compaction that a crash interrupted.
func (s *Store) init() error {
	var schema int
	var check []byte
	var sealedData bool
	err := s.view(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			if v := m.Get(metaSchema); v != nil {
				n, err := strconv.Atoi(string(v))
				if err != nil {
					return fmt.Errorf("%w: schema version %q", ErrCorrupt, v)
				}
				schema = n
			}
			check = append([]byte(nil), m.Get(metaKeyCheck)...)
		}
		sealedData = keyRuns.hasPrefix(tx, nil)
		if !sealedData && tx.Bucket(bucketMeta) != nil {
			// Records written since the last index merge carry keys the
			// key bucket does not have yet.
			sealedData = tailHasParts(tx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	if schema > SchemaVersion {
		return fmt.Errorf("store %s: %w (schema %d, this agent knows %d): upgrade the agent", s.path, ErrNewerSchema, schema, SchemaVersion)
	}
	master, created, err := loadDeviceKey(s.opts.KeyFile, len(check) == 0 || !sealedData)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if created {
		s.log.Info("created device key", "path", s.opts.KeyFile)
	}
	if fi, err := os.Stat(s.opts.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		s.log.Warn("device key is readable by others; chmod 600 it", "path", s.opts.KeyFile, "mode", fi.Mode().Perm().String())
	}
	s.keys = deriveKeys(master)
	if len(check) > 0 && !s.keys.checkMatches(check) && sealedData {
		return fmt.Errorf("store %s: %w %s", s.path, ErrWrongKey, s.opts.KeyFile)
	}
	var pendingCompact bool
	err = s.update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets() {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if schema < SchemaVersion {
			// Schema 1 kept the index and keys in one bucket each, which
			// this code reads as their oldest run (see sortedRuns); an
			// older agent would not see the runs, so it must refuse.
			if err := m.Put(metaSchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
				return err
			}
		}
		pendingCompact = m.Get(metaCompactPending) != nil
		// Without sealed data nothing depends on the old key, so a new
		// key (lost file, first start) simply takes over.
		return m.Put(metaKeyCheck, s.keys.check)
	})
	if err != nil {
		return fmt.Errorf("store %s: init: %w", s.path, err)
	}
	// Index what a previous run wrote but did not merge, so the key
	// bucket holds every subject's key before anything asks for it.
	if err := s.updateMerged(nil); err != nil {
		// Not fatal: records carry their keys, erase and export merge
		// first, and a full disk must not keep the agent from starting.
		s.log.Warn("could not merge the subject index at start; will retry", "err", err)
	}
	if pendingCompact {
		s.log.Info("finishing a compaction interrupted by a crash")
		if err := s.compact(); err != nil {
			return err
		}
	}
	return nil
}

func allBuckets() [][]byte {
	b := [][]byte{bucketMeta, bucketLedger, bucketPolicy, bucketCalls}
	for _, t := range Types {
		b = append(b, outboxBucket(t))
	}
	return b
}

// view and update are the only ways to a transaction; callers hold mu
// (through locked) so that a compaction never swaps the file under one.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	return s.db.View(fn)
}

func (s *Store) update(fn func(*bolt.Tx) error) error {
	return s.db.Update(fn)
}

func (s *Store) locked(fn func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return fn()
}

func (s *Store) loadCounts() error {
	return s.view(func(tx *bolt.Tx) error {
		s.statsMu.Lock()
		defer s.statsMu.Unlock()
		for _, t := range Types {
			s.pending[t] = tx.Bucket(outboxBucket(t)).Stats().KeyN
		}
		return nil
	})
}

// Close stops accepting appends, lets those already queued finish, and
// closes the file.
func (s *Store) Close() error {
	s.stopOnce.Do(func() {
		s.closeMu.Lock()
		s.closed = true
		s.closeMu.Unlock()
		close(s.stop)
	})
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
}

// Check runs bbolt's consistency check over the whole file, and checks the
// rules of the subject index's and key table's runs (see sortedRuns.check).
func (s *Store) Check() error {
	return s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			var errs []error
			for err := range tx.Check() {
				errs = append(errs, err)
			}
			for _, r := range []sortedRuns{indexRuns, keyRuns} {
				if err := r.check(tx); err != nil {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		})
	})
}

// DeviceID returns the device id kept in meta, generating one on first use
// with gen. The config's device_id, when set, overrides it in the agent.
func (s *Store) DeviceID(gen func() string) (string, error) {
	var id string
	err := s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			m := tx.Bucket(bucketMeta)
			if v := m.Get(metaDeviceID); v != nil {
				id = string(v)
				return nil
			}
			id = gen()
			return m.Put(metaDeviceID, []byte(id))
		})
	})
	return id, err
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// indexKey is ref | type | seq: a prefix scan on ref finds every record
// that holds a field of the subject.
func indexKey(ref subjectRef, t Type, seq uint64) []byte {
	k := make([]byte, 0, len(ref)+9)
	k = append(k, ref[:]...)
	k = append(k, byte(t))
	return binary.BigEndian.AppendUint64(k, seq)
}

// SubjectDigest is the keyed hash under which the store files the subject.
// It reveals nothing without the device key; tests use it to prove that an
// erased subject left no reference behind in the file.
func (s *Store) SubjectDigest(subject string) []byte {
	ref := s.keys.ref(s.Subject(subject))
	return ref[:]
}

func (s *Store) reach(point string) {
	if s.opts.crashPoint != nil {
		s.opts.crashPoint(point)
	}
}
