package store

import "encoding/binary"

// keyFilter answers "might the key bucket hold this subject's key?" without
// a B-tree search. Most records of a call centre name a party the device
// has not seen before, and looking each one up in a key bucket of a million
// entries was a tenth of the committer's time. A "no" is certain; a "yes"
// costs the Get it would have cost anyway. A wrong "no" would be harmless
// too: the record would carry a second key for the subject, and an erase
// strips every part of the subject whatever key sealed it.
//
// Refs are keyed hashes, so their bytes serve as the filter's hashes.
type keyFilter struct {
	bits  []uint64
	mask  uint64
	count int // refs added since the last reset
}

// keyFilterHashes is how many bits each ref sets; with at least 16 bits
// per ref (grow keeps it so) a miss is taken for a hit about 0.05% of the
// time.
const keyFilterHashes = 3

func newKeyFilter(capacity int) *keyFilter {
	n := uint64(1 << 20) // bits: 128 KiB, a million-ref bucket needs 2 MiB
	for n < uint64(capacity)*16 {
		n <<= 1
	}
	return &keyFilter{bits: make([]uint64, n/64), mask: n - 1}
}

func (f *keyFilter) add(ref subjectRef) {
	for i := range keyFilterHashes {
		b := binary.LittleEndian.Uint64(ref[i*8:]) & f.mask
		f.bits[b/64] |= 1 << (b % 64)
	}
	f.count++
}

func (f *keyFilter) mayHave(ref subjectRef) bool {
	for i := range keyFilterHashes {
		b := binary.LittleEndian.Uint64(ref[i*8:]) & f.mask
		if f.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// full reports that the filter holds more refs than its size keeps
// precise; the caller rebuilds it from the key bucket, twice as large.
func (f *keyFilter) full() bool { return uint64(f.count)*16 > f.mask+1 }
