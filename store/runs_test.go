package store

import (
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestSortedRuns: runs of a table behave as one sorted table, their sizes
// stay a binary counter's (each run larger than the next), and a legacy
// bucket is read as the oldest run until a merge folds it in.
func TestSortedRuns(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "runs.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := sortedRuns{prefix: []byte("t."), legacy: []byte("t")}
	key := func(i int) []byte { return fmt.Appendf(nil, "k%02d-%05d", i%7, i) }
	update := func(fn func(tx *bolt.Tx) error) {
		t.Helper()
		if err := db.Update(fn); err != nil {
			t.Fatal(err)
		}
	}
	update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(r.legacy)
		if err != nil {
			return err
		}
		for i := range 40 {
			if err := b.Put(key(i), []byte("legacy")); err != nil {
				return err
			}
		}
		return nil
	})
	next := 40
	for batch := range 30 {
		update(func(tx *bolt.Tx) error {
			var es []entry
			for range 5 + batch%3 {
				es = append(es, entry{key(next), fmt.Appendf(nil, "v%d", next)})
				next++
			}
			return r.add(tx, es)
		})
	}
	db.View(func(tx *bolt.Tx) error {
		sizes := r.runSizes(tx)
		if len(sizes) > 6 {
			t.Errorf("%d runs for %d entries (%v), want at most 6", len(sizes), next, sizes)
		}
		for i := 1; i < len(sizes); i++ {
			if sizes[i] >= sizes[i-1] {
				t.Errorf("run sizes %v: a run as large as the one before it was not merged", sizes)
			}
		}
		if tx.Bucket(r.legacy) != nil {
			t.Errorf("legacy bucket still there after %d entries were added to its 40", next-40)
		}
		n := 0
		r.forEach(tx, func(_, _ []byte) { n++ })
		if n != next {
			t.Errorf("%d entries in the runs, want %d", n, next)
		}
		for _, i := range []int{0, 39, 40, next - 1} {
			want := fmt.Sprintf("v%d", i)
			if i < 40 {
				want = "legacy"
			}
			if got := r.get(tx, key(i)); string(got) != want {
				t.Errorf("get %s = %q, want %q", key(i), got, want)
			}
		}
		if got := len(r.withPrefix(tx, []byte("k03-"))); got != (next+3)/7 {
			t.Errorf("withPrefix k03- found %d, want %d", got, (next+3)/7)
		}
		return nil
	})
	update(func(tx *bolt.Tx) error {
		if ok, err := r.delete(tx, key(41)); !ok || err != nil {
			t.Errorf("delete = %v, %v", ok, err)
		}
		if ok, _ := r.delete(tx, key(41)); ok {
			t.Errorf("second delete found the key")
		}
		if r.get(tx, key(41)) != nil || r.hasPrefix(tx, []byte("k99")) || !r.hasPrefix(tx, []byte("k06-")) {
			t.Errorf("after delete: get %q, hasPrefix k99 %v, k06 %v", r.get(tx, key(41)), r.hasPrefix(tx, []byte("k99")), r.hasPrefix(tx, []byte("k06-")))
		}
		return r.drop(tx)
	})
	db.View(func(tx *bolt.Tx) error {
		if len(r.runs(tx)) != 0 {
			t.Errorf("runs left after drop: %v", r.runSizes(tx))
		}
		return nil
	})
}
