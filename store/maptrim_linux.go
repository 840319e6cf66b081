package store

import (
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// trimMap drops the pages of bbolt's map from the process's resident set.
// bbolt reads the file through a shared, read-only map, and every page a
// commit, a merge step or a reader touched stayed resident, counted in the
// agent's RSS, until bbolt remapped a grown file: in the SIP proxy's 60 s
// runs at twice its capacity that was 15-66 MiB beside the 45-48 MiB the
// agent itself held. The pages stay in the page cache (where the kernel
// reclaims them more readily once unmapped), so touching one again is a
// minor fault, not a read.
//
// It must run inside a write transaction: only a writer's commit remaps,
// so the map cannot move meanwhile (and another mapping take its place).
func trimMap(db *bolt.DB, tx *bolt.Tx) error {
	data, size := db.Info().Data, tx.Size()
	if data == 0 || size <= 0 {
		return nil
	}
	// madvise by address: the map's bytes are bbolt's, not a Go slice.
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, data, uintptr(size), unix.MADV_DONTNEED)
	if errno != 0 {
		return errno
	}
	return nil
}
