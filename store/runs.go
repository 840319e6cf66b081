package store

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"

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
// leaf filled once and never split, and the two smallest runs are merged
// into one while the larger holds at most half as much again as the
// smaller, like the digits of a binary counter (whose digits are equal;
// batches differ a little in size). An entry is thus rewritten about
// log2(held / merged at once) times, always in order, and a lookup searches
// about that many runs (plus one per maxRunEntries held). The runs of one
// table never share a key.
//
// Two runs are merged a step at a time, each step in its own write
// transaction (see step), so that no commit of records waits behind the
// rewrite of a large run: in one transaction, five runs carried into one of
// 154,325 entries in 1.25 s, and every BYE answer waited for it. The run
// being written is named for itself and the two it merges (mergedName);
// while those two exist it holds a copy of a prefix of their entries, and
// lookups skip it. The step that writes its last entry deletes the two in
// the same transaction, and from then on it is a run like any other.
type sortedRuns struct {
	prefix []byte // run buckets are named prefix + a 16-digit hex number
	// legacy is the single bucket of schema 1, read as the oldest run
	// until a merge folds it into a new one.
	legacy []byte
}

// maxRunEntries bounds the runs a merge makes: past it runs are only added,
// and a lookup searches one more run for every maxRunEntries held. Merge
// steps keep a large merge from stalling commits; the bound still caps how
// often an entry is rewritten (log2(maxRunEntries/mergeEvery) = 5 times),
// where each merge into a run of millions would rewrite it all again.
const maxRunEntries = 1 << 18

var (
	indexRuns = sortedRuns{prefix: []byte("subjects."), legacy: bucketSubjects}
	keyRuns   = sortedRuns{prefix: []byte("keys."), legacy: bucketKeys}
)

type run struct {
	name []byte
	b    *bolt.Bucket
	num  uint64 // the legacy run is 0
	// merges names the two runs a merged run was written from, older
	// first; the run is still being written while either exists.
	merges *[2]uint64
}

// runMerge is a merge in progress: into holds a prefix of the entries of
// older and newer, in order.
type runMerge struct {
	into, older, newer run
}

// entry is one key and value of a run.
type entry struct{ k, v []byte }

// mergedMark follows the prefix in the name of a merged run; it sorts
// after the hex digits, so merged runs come last in a listing.
const mergedMark = '~'

func (r sortedRuns) name(n uint64) []byte { return fmt.Appendf(bytes.Clone(r.prefix), "%016x", n) }

// mergedName names the run numbered n that merges runs older and newer.
func (r sortedRuns) mergedName(n, older, newer uint64) []byte {
	return fmt.Appendf(bytes.Clone(r.prefix), "%c%016x.%016x.%016x", mergedMark, n, older, newer)
}

// parse reads a run's number, and for a merged run the two it merges, from
// its bucket name; ok is false for a name that is neither.
func (r sortedRuns) parse(name []byte) (n uint64, merges *[2]uint64, ok bool) {
	hex := func(b []byte) (uint64, bool) {
		v, err := strconv.ParseUint(string(b), 16, 64)
		return v, err == nil && len(b) == 16
	}
	rest := name[len(r.prefix):]
	if len(rest) == 16 {
		n, ok = hex(rest)
		return n, nil, ok
	}
	if len(rest) != 1+3*16+2 || rest[0] != mergedMark || rest[17] != '.' || rest[34] != '.' {
		return 0, nil, false
	}
	n, ok1 := hex(rest[1:17])
	older, ok2 := hex(rest[18:34])
	newer, ok3 := hex(rest[35:])
	return n, &[2]uint64{older, newer}, ok1 && ok2 && ok3
}

// state returns the runs lookups read, oldest first, and the merge in
// progress, if any.
func (r sortedRuns) state(tx *bolt.Tx) ([]run, *runMerge) {
	var all []run
	if b := tx.Bucket(r.legacy); b != nil {
		all = append(all, run{name: r.legacy, b: b})
	}
	c := tx.Cursor()
	for k, v := c.Seek(r.prefix); k != nil && bytes.HasPrefix(k, r.prefix); k, v = c.Next() {
		if v != nil {
			continue // not a bucket
		}
		if n, m, ok := r.parse(k); ok {
			all = append(all, run{name: bytes.Clone(k), b: tx.Bucket(k), num: n, merges: m})
		}
	}
	// Numbers are unique within a table, the legacy run's 0 included.
	find := func(n uint64) int { return slices.IndexFunc(all, func(x run) bool { return x.num == n }) }
	var m *runMerge
	visible := all[:0:0]
	for _, x := range all {
		if x.merges != nil {
			o, n := find(x.merges[0]), find(x.merges[1])
			if o >= 0 && n >= 0 {
				m = &runMerge{into: x, older: all[o], newer: all[n]}
				continue
			}
		}
		visible = append(visible, x)
	}
	slices.SortStableFunc(visible, func(a, b run) int { return cmpUint(a.num, b.num) })
	return visible, m
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// runs returns the runs lookups read, oldest first.
func (r sortedRuns) runs(tx *bolt.Tx) []run {
	runs, _ := r.state(tx)
	return runs
}

// all returns every run, the one a merge is writing included: what a sweep
// must delete from.
func (r sortedRuns) all(tx *bolt.Tx) []run {
	runs, m := r.state(tx)
	if m != nil {
		runs = append(runs, m.into)
	}
	return runs
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

// delete removes key from the run that holds it, and from the run a merge
// is writing, which may hold a copy.
func (r sortedRuns) delete(tx *bolt.Tx, key []byte) (bool, error) {
	runs, m := r.state(tx)
	if m != nil {
		if err := m.into.b.Delete(key); err != nil {
			return false, err
		}
	}
	for _, x := range runs {
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

// drop deletes every run, the one a merge is writing included.
func (r sortedRuns) drop(tx *bolt.Tx) error {
	for _, x := range r.all(tx) {
		if err := tx.DeleteBucket(x.name); err != nil {
			return err
		}
	}
	return nil
}

// next is a number no run of the table has.
func (r sortedRuns) next(runs []run, m *runMerge) uint64 {
	n := uint64(0)
	for _, x := range runs {
		n = max(n, x.num)
	}
	if m != nil {
		n = max(n, m.into.num)
	}
	return n + 1
}

// add writes entries, sorted by key and holding no key another run holds,
// as a new run. The merges it calls for are left to step.
func (r sortedRuns) add(tx *bolt.Tx, entries []entry) error {
	if len(entries) == 0 {
		return nil
	}
	runs, m := r.state(tx)
	n := r.next(runs, m)
	b, err := r.create(tx, r.name(n))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := b.Put(e.k, e.v); err != nil {
			return err
		}
	}
	return b.SetSequence(uint64(len(entries)))
}

// pick chooses the two runs to merge next, older first: the two smallest,
// while the larger holds at most half as much again as the smaller and
// together they fit in a run. (Twice as much would merge a batch into a
// run of two batches, which a binary counter leaves for the next batch.)
func (r sortedRuns) pick(runs []run) (older, newer run, ok bool) {
	if len(runs) < 2 {
		return run{}, run{}, false
	}
	bySize := slices.Clone(runs)
	slices.SortStableFunc(bySize, func(a, b run) int { return cmpUint(r.size(a), r.size(b)) })
	a, b := bySize[0], bySize[1]
	if 2*r.size(b) > 3*r.size(a) || r.size(a)+r.size(b) > maxRunEntries {
		return run{}, run{}, false
	}
	if a.num > b.num {
		a, b = b, a
	}
	return a, b, true
}

// step writes up to budget entries of merges of two runs, going on with
// the merge in progress and starting the next ones the runs call for. It
// reports whether there is more to do.
func (r sortedRuns) step(tx *bolt.Tx, budget int) (bool, error) {
	runs, m := r.state(tx)
	for {
		if m == nil {
			older, newer, ok := r.pick(runs)
			if !ok {
				return false, nil
			}
			if budget <= 0 {
				return true, nil
			}
			n := r.next(runs, m)
			name := r.mergedName(n, older.num, newer.num)
			b, err := r.create(tx, name)
			if err != nil {
				return false, err
			}
			m = &runMerge{into: run{name: name, b: b, num: n}, older: older, newer: newer}
		}
		done, err := r.copyMerge(tx, m, &budget)
		if err != nil || !done {
			return !done, err
		}
		runs = slices.DeleteFunc(runs, func(x run) bool { return x.num == m.older.num || x.num == m.newer.num })
		runs = append(runs, m.into)
		m = nil
	}
}

// copyMerge copies up to *budget entries of the merge, taking them off the
// budget, and reports whether the merge is done: then its two runs are
// deleted and the merged run is read from now on.
func (r sortedRuns) copyMerge(tx *bolt.Tx, m *runMerge, budget *int) (bool, error) {
	into := m.into.b
	into.FillPercent = 1.0
	// Resume after the last entry written: an entry deleted since was
	// deleted from its source too, so nothing is copied twice that
	// still exists, and rewriting one that does changes nothing.
	last, _ := into.Cursor().Last()
	co, cn := m.older.b.Cursor(), m.newer.b.Cursor()
	ko, vo := seekAfter(co, last)
	kn, vn := seekAfter(cn, last)
	count := into.Sequence()
	for ; *budget > 0 && (ko != nil || kn != nil); *budget-- {
		var k, v []byte
		switch c := compareNil(ko, kn); {
		case c < 0:
			k, v = ko, vo
			ko, vo = co.Next()
		case c > 0:
			k, v = kn, vn
			kn, vn = cn.Next()
		default: // runs share no key; should they, the newer's value is kept
			k, v = kn, vn
			ko, vo = co.Next()
			kn, vn = cn.Next()
		}
		if err := into.Put(k, v); err != nil {
			return false, err
		}
		count++
	}
	if err := into.SetSequence(count); err != nil {
		return false, err
	}
	if ko != nil || kn != nil {
		return false, nil
	}
	for _, x := range []run{m.older, m.newer} {
		if err := tx.DeleteBucket(x.name); err != nil {
			return false, err
		}
	}
	return true, nil
}

// seekAfter positions c at the first key after last, or at the first key
// when last is nil.
func seekAfter(c *bolt.Cursor, last []byte) ([]byte, []byte) {
	if last == nil {
		return c.First()
	}
	k, v := c.Seek(last)
	if k != nil && bytes.Equal(k, last) {
		return c.Next()
	}
	return k, v
}

func (r sortedRuns) create(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	b, err := tx.CreateBucket(name)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", name, err)
	}
	// Written in key order and never inserted into: full leaves.
	b.FillPercent = 1.0
	return b, nil
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

// check reports what breaks the runs' rules: a key in two runs lookups
// read, or in the run a merge is writing but in neither run it merges. It
// walks the runs side by side, in key order, holding one key of each.
func (r sortedRuns) check(tx *bolt.Tx) error {
	runs, m := r.state(tx)
	heads := make([][]byte, len(runs))
	curs := make([]*bolt.Cursor, len(runs))
	for i, x := range runs {
		curs[i] = x.b.Cursor()
		heads[i], _ = curs[i].First()
	}
	var prev []byte
	for {
		lo := -1
		for i, k := range heads {
			if k != nil && (lo < 0 || bytes.Compare(k, heads[lo]) < 0) {
				lo = i
			}
		}
		if lo < 0 {
			break
		}
		if prev != nil && bytes.Equal(prev, heads[lo]) {
			return fmt.Errorf("%w: %s key %x in two runs", ErrCorrupt, r.prefix, prev)
		}
		prev = bytes.Clone(heads[lo])
		heads[lo], _ = curs[lo].Next()
	}
	if m == nil {
		return nil
	}
	c := m.into.b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if m.older.b.Get(k) == nil && m.newer.b.Get(k) == nil {
			return fmt.Errorf("%w: %s key %x in run %s but in neither run it merges", ErrCorrupt, r.prefix, k, m.into.name)
		}
	}
	return nil
}
