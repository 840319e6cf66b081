package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// sortedRuns is one table kept as sorted runs. The subject index and the
// key table are keyed by a keyed hash, so a merge of new entries into one
// B-tree landed on random leaves: past a few thousand leaves every merge
// rewrote nearly all of them, and a merge's
// cost grew with everything held (a single appender on tmpfs fell from
// 109,000 records/s at 100,000 records held to 50,000 at 1,000,000).
//
// Instead each table is kept as sorted runs, like the levels of an LSM
// tree: a merge writes its entries, sorted, as a new top-level bucket, each
// leaf filled once and never split, and two runs are merged into one while
// the newer holds as many entries as the one before it, like the digits of
// a binary counter. An entry is thus rewritten about log2(held / merged at
// once) times, always in order, and a lookup searches about that many runs
// (plus one per maxRunEntries held). The runs of one table never share a
// key.
type sortedRuns struct {
	prefix []byte // run buckets are named prefix + a 16-digit hex number
	// legacy is the single bucket of schema 1, read as the oldest run
	// until a merge folds it into a new one.
	legacy []byte
}

// maxRunEntries bounds the runs a merge makes. Appends wait while a merge
// runs, and one into a run of a million entries took 2 s on tmpfs; past the
// bound runs are only added, and a lookup searches one more run for every
// maxRunEntries held.
const maxRunEntries = 1 << 18

var (
	indexRuns = sortedRuns{prefix: []byte("subjects."), legacy: bucketSubjects}
	keyRuns   = sortedRuns{prefix: []byte("keys."), legacy: bucketKeys}
)

type run struct {
	name []byte
	b    *bolt.Bucket
}

// entry is one key and value of a run.
type entry struct{ k, v []byte }

// runs returns the table's runs, oldest first.
func (r sortedRuns) runs(tx *bolt.Tx) []run {
	var out []run
	if b := tx.Bucket(r.legacy); b != nil {
		out = append(out, run{r.legacy, b})
	}
	c := tx.Cursor()
	for k, v := c.Seek(r.prefix); k != nil && bytes.HasPrefix(k, r.prefix); k, v = c.Next() {
		if v == nil { // a bucket
			out = append(out, run{bytes.Clone(k), tx.Bucket(k)})
		}
	}
	return out
}

func (r sortedRuns) name(n uint64) []byte { return fmt.Appendf(bytes.Clone(r.prefix), "%016x", n) }

// number is the run's number; the legacy run is 0.
func (r sortedRuns) number(name []byte) uint64 {
	var n uint64
	if bytes.HasPrefix(name, r.prefix) {
		fmt.Sscanf(string(name[len(r.prefix):]), "%x", &n)
	}
	return n
}

// size is how many entries the run was written with (its bucket sequence);
// the legacy run, written before runs, is counted.
func (r sortedRuns) size(x run) uint64 {
	if bytes.Equal(x.name, r.legacy) {
		return uint64(x.b.Stats().KeyN)
	}
	return x.b.Sequence()
}

// get returns the value of key, nil if no run has it.
func (r sortedRuns) get(tx *bolt.Tx, key []byte) []byte {
	for _, x := range r.runs(tx) {
		if v := x.b.Get(key); v != nil {
			return v
		}
	}
	return nil
}

// delete removes key from the run that holds it.
func (r sortedRuns) delete(tx *bolt.Tx, key []byte) (bool, error) {
	for _, x := range r.runs(tx) {
		if k, _ := x.b.Cursor().Seek(key); k != nil && bytes.Equal(k, key) {
			return true, x.b.Delete(key)
		}
	}
	return false, nil
}

// withPrefix returns the keys that start with prefix, in no set order.
func (r sortedRuns) withPrefix(tx *bolt.Tx, prefix []byte) [][]byte {
	var out [][]byte
	for _, x := range r.runs(tx) {
		c := x.b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			out = append(out, bytes.Clone(k))
		}
	}
	return out
}

// hasPrefix reports whether any key starts with prefix.
func (r sortedRuns) hasPrefix(tx *bolt.Tx, prefix []byte) bool {
	for _, x := range r.runs(tx) {
		if k, _ := x.b.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// forEach calls fn for every entry, run by run.
func (r sortedRuns) forEach(tx *bolt.Tx, fn func(k, v []byte)) {
	for _, x := range r.runs(tx) {
		c := x.b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			fn(k, v)
		}
	}
}

// drop deletes every run.
func (r sortedRuns) drop(tx *bolt.Tx) error {
	for _, x := range r.runs(tx) {
		if err := tx.DeleteBucket(x.name); err != nil {
			return err
		}
	}
	return nil
}

// add writes entries, sorted by key and holding no key another run holds,
// as a new run, then merges the newest runs while the newer of the last two
// holds as many entries as the older.
func (r sortedRuns) add(tx *bolt.Tx, entries []entry) error {
	if len(entries) == 0 {
		return nil
	}
	runs := r.runs(tx)
	next := uint64(1)
	if len(runs) > 0 {
		next = r.number(runs[len(runs)-1].name) + 1
	}
	b, err := r.create(tx, next)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := b.Put(e.k, e.v); err != nil {
			return err
		}
	}
	if err := b.SetSequence(uint64(len(entries))); err != nil {
		return err
	}
	runs = append(runs, run{r.name(next), b})
	for len(runs) >= 2 {
		older, newer := runs[len(runs)-2], runs[len(runs)-1]
		if r.size(newer) < r.size(older) || r.size(older)+r.size(newer) > maxRunEntries {
			break
		}
		next++
		merged, err := r.merge(tx, older, newer, next)
		if err != nil {
			return err
		}
		runs = append(runs[:len(runs)-2], merged)
	}
	return nil
}

func (r sortedRuns) create(tx *bolt.Tx, n uint64) (*bolt.Bucket, error) {
	b, err := tx.CreateBucket(r.name(n))
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", r.name(n), err)
	}
	// Written in key order and never inserted into: full leaves.
	b.FillPercent = 1.0
	return b, nil
}

// merge writes the entries of two runs, in order, as run n, and deletes
// the two. Runs share no key; should they, the newer's value is kept.
func (r sortedRuns) merge(tx *bolt.Tx, older, newer run, n uint64) (run, error) {
	b, err := r.create(tx, n)
	if err != nil {
		return run{}, err
	}
	co, cn := older.b.Cursor(), newer.b.Cursor()
	ko, vo := co.First()
	kn, vn := cn.First()
	var count uint64
	for ko != nil || kn != nil {
		var k, v []byte
		switch cmp := compareNil(ko, kn); {
		case cmp < 0:
			k, v = ko, vo
			ko, vo = co.Next()
		case cmp > 0:
			k, v = kn, vn
			kn, vn = cn.Next()
		default:
			k, v = kn, vn
			ko, vo = co.Next()
			kn, vn = cn.Next()
		}
		if err := b.Put(k, v); err != nil {
			return run{}, err
		}
		count++
	}
	if err := b.SetSequence(count); err != nil {
		return run{}, err
	}
	for _, x := range []run{older, newer} {
		if err := tx.DeleteBucket(x.name); err != nil {
			return run{}, err
		}
	}
	return run{r.name(n), b}, nil
}

// compareNil orders keys with nil (an exhausted cursor) last.
func compareNil(a, b []byte) int {
	switch {
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// runSizes lists the entries each run was written with, oldest first.
func (r sortedRuns) runSizes(tx *bolt.Tx) []uint64 {
	var out []uint64
	for _, x := range r.runs(tx) {
		out = append(out, r.size(x))
	}
	return out
}
