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
