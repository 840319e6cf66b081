package passport

import (
	"container/list"
	"fmt"
	"time"
)

// ReplayWindow is how many counters below the highest seen a verifier
// still tells apart: a token whose counter is further below is refused as
// too old even if it was never seen. Calls are signed in order but may
// reach the edge out of order (UDP, retries, several trunks); a device
// would need a thousand calls in flight to fall out of it.
const ReplayWindow = 1024

// counters is the anti-replay state of one key, in the manner of IPsec's
// (RFC 4303 section 3.4.3): the highest counter accepted and a bitmap of
// the ReplayWindow counters ending with it.
type counters struct {
	key  string                    // the map key, to delete on eviction
	top  uint64                    // highest counter accepted
	seen [ReplayWindow / 64]uint64 // bit i: counter top-i accepted
	last time.Time                 // when a token was last accepted
}

// accept records ctr, or says why not. It changes nothing on refusal.
func (w *counters) accept(ctr uint64) error {
	if ctr > w.top {
		w.shift(ctr - w.top)
		w.top = ctr
		w.seen[0] |= 1
		return nil
	}
	d := w.top - ctr
	if d >= ReplayWindow {
		return fmt.Errorf("%w: counter too old (%d below the highest seen)", ErrReplay, d)
	}
	word, bit := d/64, uint64(1)<<(d%64)
	if w.seen[word]&bit != 0 {
		return fmt.Errorf("%w: counter already seen", ErrReplay)
	}
	w.seen[word] |= bit
	return nil
}

// shift moves the bitmap up by d as the highest counter rises by d: bit i
// becomes bit i+d, and bits pushed past the window fall off.
func (w *counters) shift(d uint64) {
	if d >= ReplayWindow {
		w.seen = [ReplayWindow / 64]uint64{}
		return
	}
	words, bits := int(d/64), d%64
	for i := len(w.seen) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = w.seen[j] << bits
			if bits != 0 && j > 0 {
				v |= w.seen[j-1] >> (64 - bits)
			}
		}
		w.seen[i] = v
	}
}

// replays holds the counters of every key seen, least recently used
// last. Not safe for concurrent use: Verifier locks around it.
type replays struct {
	byKey map[string]*list.Element // of *counters
	lru   list.List
}

// accept checks and records ctr for key at now. A key seen for the first
// time takes any counter. When limit keys are tracked, the least recently
// used one is forgotten if it accepted nothing for twice the freshness
// window: every token it accepted is stale by then, so forgetting its
// counters lets no replay through. Otherwise the new key is refused with
// ErrCapacity rather than weaken the others' protection.
func (r *replays) accept(key string, ctr uint64, now time.Time, window time.Duration, limit int) error {
	if r.byKey == nil {
		r.byKey = make(map[string]*list.Element)
	}
	if e, ok := r.byKey[key]; ok {
		w := e.Value.(*counters)
		if err := w.accept(ctr); err != nil {
			return err
		}
		w.last = now
		r.lru.MoveToFront(e)
		return nil
	}
	if len(r.byKey) >= limit {
		oldest := r.lru.Back()
		w := oldest.Value.(*counters)
		if now.Sub(w.last) <= 2*window {
			return fmt.Errorf("%w: %d keys, the least recent active %s ago", ErrCapacity, len(r.byKey), now.Sub(w.last).Round(time.Second))
		}
		r.lru.Remove(oldest)
		delete(r.byKey, w.key)
	}
	w := &counters{key: key, top: ctr, last: now}
	w.seen[0] = 1
	r.byKey[key] = r.lru.PushFront(w)
	return nil
}
