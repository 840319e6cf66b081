package store

import (
	"bytes"
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

// legacyCalls is where agents before the checkpoint kept the calls in
// progress at a clean shutdown, as one document.
var legacyCalls = []byte("calls")

// CallsCheckpoint is the agent's latest record of its calls in progress.
type CallsCheckpoint struct {
	At    time.Time         // when it was taken; zero if never
	Calls map[string][]byte // the agent's document of each call, by Call-ID
	// Legacy is the single document an older agent kept at its last clean
	// shutdown, until the first SaveCallsInProgress drops it.
	Legacy []byte
}

// SaveCallsInProgress replaces the checkpoint of the calls in progress, so
// that the agent that starts next, after a clean stop or a crash, meters
// them when they end. They hold lines and times, no personal data.
//
// A usage record naming a call (Usage.CallID) removes that call from the
// checkpoint in the transaction that stores the record. The agent takes
// each checkpoint before handing over the records of calls that end after
// it, so no crash leaves a call both metered and in progress.
func (s *Store) SaveCallsInProgress(at time.Time, calls map[string][]byte) error {
	err := s.locked(func() error {
		return s.update(func(tx *bolt.Tx) error {
			// Only what changed is written: a PBX with thousands of
			// calls up changes a few of them a second.
			b := tx.Bucket(bucketCalls)
			var gone [][]byte
			b.ForEach(func(k, _ []byte) error {
				if _, ok := calls[string(k)]; !ok {
					gone = append(gone, bytes.Clone(k))
				}
				return nil
			})
			for _, k := range gone {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			for id, doc := range calls {
				if id == "" || bytes.Equal(b.Get([]byte(id)), doc) {
					continue
				}
				if err := b.Put([]byte(id), doc); err != nil {
					return fmt.Errorf("call %q: %w", id, err)
				}
			}
			if err := tx.Bucket(bucketPolicy).Delete(legacyCalls); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(metaCallsAt, binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano())))
		})
	})
	if err != nil {
		return fmt.Errorf("store: save calls in progress: %w", err)
	}
	return nil
}

// CallsInProgress returns the latest checkpoint of the calls in progress.
func (s *Store) CallsInProgress() (CallsCheckpoint, error) {
	cp := CallsCheckpoint{Calls: map[string][]byte{}}
	err := s.locked(func() error {
		return s.view(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bucketMeta).Get(metaCallsAt); len(v) == 8 {
				cp.At = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			}
			if d := tx.Bucket(bucketPolicy).Get(legacyCalls); d != nil {
				cp.Legacy = bytes.Clone(d)
			}
			return tx.Bucket(bucketCalls).ForEach(func(k, v []byte) error {
				cp.Calls[string(k)] = bytes.Clone(v)
				return nil
			})
		})
	})
	if err != nil {
		return CallsCheckpoint{}, fmt.Errorf("store: calls in progress: %w", err)
	}
	return cp, nil
}
