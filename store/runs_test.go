package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openRunsDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func runsUpdate(t *testing.T, db *bolt.DB, fn func(tx *bolt.Tx) error) {
	t.Helper()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// stepAll runs merge steps of budget entries, one transaction each, until
// the runs call for none, and returns how many it took.
func stepAll(t *testing.T, db *bolt.DB, r sortedRuns, budget int) int {
	t.Helper()
	for n := 1; ; n++ {
		more := false
		runsUpdate(t, db, func(tx *bolt.Tx) (err error) {
			more, err = r.step(tx, budget)
			return err
		})
		if !more {
			return n
		}
		if n > 100000 {
			t.Fatal("merge steps never finish")
		}
	}
}

// TestSortedRuns: runs of a table behave as one sorted table, merge steps
// keep them few (the two smallest are merged while the larger holds at most
// half as much again),
// and a legacy bucket is read as the oldest run until a merge folds it in.
func TestSortedRuns(t *testing.T) {
	db := openRunsDB(t, filepath.Join(t.TempDir(), "runs.db"))
	defer db.Close()
	r := sortedRuns{prefix: []byte("t."), legacy: []byte("t")}
	key := func(i int) []byte { return fmt.Appendf(nil, "k%02d-%05d", i%7, i) }
	runsUpdate(t, db, func(tx *bolt.Tx) error {
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
		runsUpdate(t, db, func(tx *bolt.Tx) error {
			var es []entry
			for range 20 + batch%3 {
				es = append(es, entry{key(next), fmt.Appendf(nil, "v%d", next)})
				next++
			}
			return r.add(tx, es)
		})
		stepAll(t, db, r, 7) // small steps: most merges take several
	}
	db.View(func(tx *bolt.Tx) error {
		sizes := r.runSizes(tx)
		if len(sizes) > 6 {
			t.Errorf("%d runs for %d entries (%v), want at most 6", len(sizes), next, sizes)
		}
		slices.Sort(sizes)
		if len(sizes) >= 2 && 2*sizes[1] <= 3*sizes[0] {
			t.Errorf("run sizes %v: the two smallest were left unmerged", sizes)
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
	runsUpdate(t, db, func(tx *bolt.Tx) error {
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

// A merge written over many transactions, with the file closed and opened
// in between: until its last step lookups see each entry once, from the
// runs it merges; an entry deleted meanwhile stays deleted, whether the
// merge had copied it yet or not; a new run added meanwhile is kept; and
// the last step leaves one run of every entry.
func TestSortedRunsMergeInSteps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runs.db")
	db := openRunsDB(t, path)
	defer func() { db.Close() }()
	r := sortedRuns{prefix: []byte("t."), legacy: []byte("t")}
	key := func(i int) []byte { return fmt.Appendf(nil, "k%02d-%05d", i%5, i) }
	const each = 300
	live := map[string]bool{}
	for run := range 2 {
		runsUpdate(t, db, func(tx *bolt.Tx) error {
			var es []entry
			for i := run; i < 2*each; i += 2 { // the two runs interleave
				es = append(es, entry{key(i), []byte("v")})
				live[string(key(i))] = true
			}
			slices.SortFunc(es, func(a, b entry) int { return compareNil(a.k, b.k) })
			return r.add(tx, es)
		})
	}
	check := func(when string) {
		t.Helper()
		db.View(func(tx *bolt.Tx) error {
			seen := map[string]int{}
			r.forEach(tx, func(k, _ []byte) { seen[string(k)]++ })
			for k, n := range seen {
				if n != 1 || !live[k] {
					t.Errorf("%s: %s seen %d times, live %v", when, k, n, live[k])
				}
			}
			if len(seen) != len(live) {
				t.Errorf("%s: %d entries seen, want %d", when, len(seen), len(live))
			}
			if got, want := len(r.withPrefix(tx, []byte("k02-"))), countPrefix(live, "k02-"); got != want {
				t.Errorf("%s: withPrefix k02- = %d, want %d", when, got, want)
			}
			return nil
		})
	}
	steps := 0
	for more := true; more; steps++ {
		runsUpdate(t, db, func(tx *bolt.Tx) (err error) {
			more, err = r.step(tx, 25)
			return err
		})
		check(fmt.Sprintf("after step %d", steps+1))
		db.View(func(tx *bolt.Tx) error {
			if err := r.check(tx); err != nil {
				t.Errorf("after step %d: %v", steps+1, err)
			}
			return nil
		})
		switch steps {
		case 3:
			// Copied already (the first 100 keys of 600) and not yet.
			runsUpdate(t, db, func(tx *bolt.Tx) error {
				for _, i := range []int{5, 10, 597} {
					if ok, err := r.delete(tx, key(i)); !ok || err != nil {
						t.Errorf("delete %s mid-merge = %v, %v", key(i), ok, err)
					}
					delete(live, string(key(i)))
				}
				return nil
			})
			check("after deletes")
		case 5:
			db.Close()
			db = openRunsDB(t, path)
			check("after reopening")
		case 7:
			runsUpdate(t, db, func(tx *bolt.Tx) error {
				live["k99-new"] = true
				return r.add(tx, []entry{{[]byte("k99-new"), []byte("v")}})
			})
			check("after adding a run")
		}
	}
	if steps < 20 {
		t.Errorf("merge of %d entries took %d steps of 25", 2*each, steps)
	}
	db.View(func(tx *bolt.Tx) error {
		// Sizes count what a run was written with: the two entries
		// deleted after their copy count, the one deleted before not.
		if sizes := r.runSizes(tx); !slices.Equal(sizes, []uint64{1, 2*each - 1}) && !slices.Equal(sizes, []uint64{2*each - 1, 1}) {
			t.Errorf("runs after the merge: %v, want the merged run (%d written) and the new one", sizes, 2*each-1)
		}
		return nil
	})
}

// check finds a key held by two runs, and one in a run being written that
// neither of the runs it merges holds.
func TestSortedRunsCheck(t *testing.T) {
	db := openRunsDB(t, filepath.Join(t.TempDir(), "runs.db"))
	defer db.Close()
	r := sortedRuns{prefix: []byte("t."), legacy: []byte("t")}
	for _, ks := range [][]string{{"a", "c"}, {"b", "d"}} {
		runsUpdate(t, db, func(tx *bolt.Tx) error {
			var es []entry
			for _, k := range ks {
				es = append(es, entry{[]byte(k), []byte("v")})
			}
			return r.add(tx, es)
		})
	}
	runsUpdate(t, db, func(tx *bolt.Tx) error {
		_, err := r.step(tx, 1) // the merge of the two has begun
		return err
	})
	checkErr := func() error {
		var err error
		db.View(func(tx *bolt.Tx) error { err = r.check(tx); return nil })
		return err
	}
	if err := checkErr(); err != nil {
		t.Fatalf("sound runs: %v", err)
	}
	runsUpdate(t, db, func(tx *bolt.Tx) error {
		_, m := r.state(tx)
		return m.into.b.Put([]byte("zz"), []byte("v"))
	})
	if err := checkErr(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a key in the merged run only: check = %v, want ErrCorrupt", err)
	}
	runsUpdate(t, db, func(tx *bolt.Tx) error {
		_, m := r.state(tx)
		if err := m.into.b.Delete([]byte("zz")); err != nil {
			return err
		}
		return r.add(tx, []entry{{[]byte("c"), []byte("v")}})
	})
	if err := checkErr(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a key in two runs: check = %v, want ErrCorrupt", err)
	}
}

func countPrefix(m map[string]bool, p string) int {
	n := 0
	for k := range m {
		if len(k) >= len(p) && k[:len(p)] == p {
			n++
		}
	}
	return n
}
