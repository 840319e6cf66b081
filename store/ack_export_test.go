package store

import bolt "go.etcd.io/bbolt"

// AckLogForTest is how many merged records acknowledged by range wait in
// the ack log for their index entries and keys to be swept.
func AckLogForTest(s *Store) uint64 {
	var n uint64
	s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			if b := tx.Bucket(bucketAcked); b != nil {
				n = b.Sequence()
			}
			return nil
		})
	})
	return n
}

// KeyHeldForTest reports whether the key table holds the subject's key.
func KeyHeldForTest(s *Store, subject string) bool {
	ref := s.keys.ref(s.Subject(subject))
	held := false
	s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			held = keyRuns.get(tx, ref[:]) != nil
			return nil
		})
	})
	return held
}

// IndexEntriesForTest counts the subject-index entries of the subject,
// dangling ones included.
func IndexEntriesForTest(s *Store, subject string) int {
	ref := s.keys.ref(s.Subject(subject))
	n := 0
	s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			n = len(indexRuns.withPrefix(tx, ref[:]))
			return nil
		})
	})
	return n
}
