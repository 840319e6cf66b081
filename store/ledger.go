package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// RememberCommand records a command id until it expires. It reports
// whether the id was already there: a replay. The ledger survives restarts
// because replay protection that forgets on reboot protects nothing.
func (s *Store) RememberCommand(id string, expires time.Time) (seen bool, err error) {
	if id == "" {
		return false, errors.New("store: remember command: empty id")
	}
	err = s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketLedger)
			if b.Get([]byte(id)) != nil {
				seen = true
				return nil
			}
			return b.Put([]byte(id), binary.BigEndian.AppendUint64(nil, uint64(expires.Unix())))
		})
	})
	if err != nil {
		return false, fmt.Errorf("store: remember command: %w", err)
	}
	return seen, nil
}

// CommandSeen reports whether a command id is in the ledger.
func (s *Store) CommandSeen(id string) (seen bool, err error) {
	err = s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			seen = tx.Bucket(bucketLedger).Get([]byte(id)) != nil
			return nil
		})
	})
	if err != nil {
		return false, fmt.Errorf("store: command seen: %w", err)
	}
	return seen, nil
}

// PruneCommands forgets command ids that expired before now; a command past
// its expiry is refused as expired anyway, so its id need not be kept.
func (s *Store) PruneCommands(now time.Time) (int, error) {
	n := 0
	err := s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			n = 0
			b := tx.Bucket(bucketLedger)
			var old [][]byte
			err := b.ForEach(func(k, v []byte) error {
				if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) < now.Unix() {
					old = append(old, k)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n = len(old)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune commands: %w", err)
	}
	return n, nil
}

var (
	policyDoc     = []byte("document")
	policyVersion = []byte("version")
)

// SavePolicy keeps the policy in force, so a restart applies it before the
// broker is reachable again.
func (s *Store) SavePolicy(version int64, doc []byte) error {
	err := s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketPolicy)
			if err := b.Put(policyDoc, doc); err != nil {
				return err
			}
			return b.Put(policyVersion, binary.BigEndian.AppendUint64(nil, uint64(version)))
		})
	})
	if err != nil {
		return fmt.Errorf("store: save policy: %w", err)
	}
	return nil
}

// Policy returns the saved policy; doc is nil when none was saved.
func (s *Store) Policy() (version int64, doc []byte, err error) {
	err = s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketPolicy)
			if v := b.Get(policyVersion); len(v) == 8 {
				version = int64(binary.BigEndian.Uint64(v))
			}
			if d := b.Get(policyDoc); d != nil {
				doc = append([]byte(nil), d...)
			}
			return nil
		})
	})
	if err != nil {
		return 0, nil, fmt.Errorf("store: policy: %w", err)
	}
	return version, doc, nil
}

var policyUsage = []byte("usage")

// SavePolicyUsage keeps what the rules have counted against the policy
// (answered minutes per line this month), so that a restart does not
// reset a quota. It holds no personal data: lines are the customer's
// Leadport numbers.
func (s *Store) SavePolicyUsage(doc []byte) error {
	err := s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPolicy).Put(policyUsage, doc) })
	})
	if err != nil {
		return fmt.Errorf("store: save policy usage: %w", err)
	}
	return nil
}

// PolicyUsage returns what SavePolicyUsage kept, nil when nothing was.
func (s *Store) PolicyUsage() ([]byte, error) {
	var doc []byte
	err := s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			if d := tx.Bucket(bucketPolicy).Get(policyUsage); d != nil {
				doc = append([]byte(nil), d...)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: policy usage: %w", err)
	}
	return doc, nil
}

var callsInProgress = []byte("calls")

// SaveCallsInProgress keeps the calls in progress at a clean shutdown, so
// that the agent that starts next meters them when they end. They hold
// lines and times, no personal data. nil clears them.
func (s *Store) SaveCallsInProgress(doc []byte) error {
	err := s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			if doc == nil {
				return tx.Bucket(bucketPolicy).Delete(callsInProgress)
			}
			return tx.Bucket(bucketPolicy).Put(callsInProgress, doc)
		})
	})
	if err != nil {
		return fmt.Errorf("store: save calls in progress: %w", err)
	}
	return nil
}

// CallsInProgress returns what SaveCallsInProgress kept, nil when nothing.
func (s *Store) CallsInProgress() ([]byte, error) {
	var doc []byte
	err := s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			if d := tx.Bucket(bucketPolicy).Get(callsInProgress); d != nil {
				doc = append([]byte(nil), d...)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: calls in progress: %w", err)
	}
	return doc, nil
}
