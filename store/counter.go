package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// counterPrefix names a counter's key in the meta bucket, which erase-all
// keeps: a counter that restarted after a decommissioning erase would
// repeat values that a verifier has already seen.
const counterPrefix = "counter."

// ReserveCounter hands the caller the next n values of the named counter,
// [first, first+n), and returns once the reservation is durable. Values are
// never handed out twice: not across restarts, SIGKILL (a reservation that
// was in use when the process died is skipped, not reused) or erase-all.
// The first value of a new counter is 1.
//
// Callers hand values out from memory and reserve the next range when one
// runs out, so the store is written once per range, not once per value.
func (s *Store) ReserveCounter(name string, n uint64) (first uint64, err error) {
	if name == "" || n == 0 {
		return 0, errors.New("store: reserve counter: empty name or range")
	}
	key := []byte(counterPrefix + name)
	err = s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			m := tx.Bucket(bucketMeta)
			first = 1
			if v := m.Get(key); len(v) == 8 {
				first = binary.BigEndian.Uint64(v)
			}
			if first > math.MaxUint64-n {
				return fmt.Errorf("counter %q is exhausted", name)
			}
			return m.Put(key, binary.BigEndian.AppendUint64(nil, first+n))
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store: reserve counter: %w", err)
	}
	return first, nil
}
