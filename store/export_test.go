package store

import (
	"bytes"
	"strconv"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// inFile runs fn in a transaction on a closed store file, writable or not.
func inFile(t testing.TB, path string, writable bool, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: !writable})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	run := db.View
	if writable {
		run = db.Update
	}
	if err := run(fn); err != nil {
		t.Fatal(err)
	}
}

// SetSchemaForTest rewrites the schema version of a closed store file, to
// test how a file from a newer agent is refused.
func SetSchemaForTest(t testing.TB, path string, v int) {
	t.Helper()
	inFile(t, path, true, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaSchema, []byte(strconv.Itoa(v)))
	})
}

// SchemaForTest reads the schema version of a closed store file.
func SchemaForTest(t testing.TB, path string) int {
	t.Helper()
	v := 0
	inFile(t, path, false, func(tx *bolt.Tx) error {
		v, _ = strconv.Atoi(string(tx.Bucket(bucketMeta).Get(metaSchema)))
		return nil
	})
	return v
}

// CompactPendingForTest reports whether a closed store file still has an
// erase whose rewrite or scrub has not finished.
func CompactPendingForTest(t testing.TB, path string) bool {
	t.Helper()
	pending := false
	inFile(t, path, false, func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			pending = m.Get(metaCompactPending) != nil
		}
		return nil
	})
	return pending
}

// WithCrashPoint makes the store call fn at the named points of an erase,
// where crash tests stop the process (like bbolt's gofail points).
func WithCrashPoint(o *Options, fn func(name string)) { o.crashPoint = fn }

// WithMergeEvery makes the store merge its subject index every n records.
func WithMergeEvery(o *Options, n int) { o.mergeEvery = n }

// WithRunStep makes each merge step of the index runs write at most n
// entries per table.
func WithRunStep(o *Options, n int) { o.runStep = n }

// SetLegacyCallsForTest writes the calls document an agent from before the
// checkpoint kept at a clean stop, into a closed store file.
func SetLegacyCallsForTest(t testing.TB, path string, doc []byte) {
	t.Helper()
	inFile(t, path, true, func(tx *bolt.Tx) error { return tx.Bucket(bucketPolicy).Put(legacyCalls, doc) })
}

// RunSizesForTest lists the entries of each run of the subject index and
// of the key table, oldest first, in a closed store file.
func RunSizesForTest(t testing.TB, path string) (index, keys []uint64) {
	t.Helper()
	inFile(t, path, false, func(tx *bolt.Tx) error {
		index, keys = indexRuns.runSizes(tx), keyRuns.runSizes(tx)
		return nil
	})
	return index, keys
}

// ToSchema1ForTest rewrites a closed store file in the layout of schema 1:
// the subject index and the key table each in one bucket.
func ToSchema1ForTest(t testing.TB, path string) {
	t.Helper()
	inFile(t, path, true, func(tx *bolt.Tx) error {
		for _, r := range []sortedRuns{indexRuns, keyRuns} {
			var all []entry
			r.forEach(tx, func(k, v []byte) { all = append(all, entry{bytes.Clone(k), bytes.Clone(v)}) })
			if err := r.drop(tx); err != nil {
				return err
			}
			flat, err := tx.CreateBucket(r.legacy)
			if err != nil {
				return err
			}
			for _, e := range all {
				if err := flat.Put(e.k, e.v); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bucketMeta).Put(metaSchema, []byte("1"))
	})
}

// TrimMapForTest drops the store's map from the resident set now, as a
// commit does every trimEvery.
func TrimMapForTest(s *Store) error {
	return s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error { return trimMap(s.db, tx) })
	})
}

// StepRunsForTest runs one merge step of the index runs now, as a commit
// does once it has earned one.
func StepRunsForTest(s *Store) error { return s.locked(s.stepRuns) }
