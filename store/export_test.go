package store

import (
	"strconv"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// SetSchemaForTest rewrites the schema version of a closed store file, to
// test how a file from a newer agent is refused.
func SetSchemaForTest(t testing.TB, path string, v int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaSchema, []byte(strconv.Itoa(v)))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// CompactPendingForTest reports whether a closed store file still has an
// erase whose rewrite or scrub has not finished.
func CompactPendingForTest(t testing.TB, path string) bool {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pending := false
	db.View(func(tx *bolt.Tx) error {
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

// SetLegacyCallsForTest writes the calls document an agent from before the
// checkpoint kept at a clean stop, into a closed store file.
func SetLegacyCallsForTest(t testing.TB, path string, doc []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPolicy).Put(legacyCalls, doc) }); err != nil {
		t.Fatal(err)
	}
}
