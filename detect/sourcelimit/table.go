// Package sourcelimit keeps what a listener knows about the sources it
// does not trust: a token bucket per source address (how fast it may be
// answered), the bytes it sent and was sent (so that answers never amplify
// a spoofed flood), failed attempts and the penalty they earn (fail2ban),
// and whatever the caller counts beside.
//
// The table is bounded: at most Max entries, the least recently seen
// evicted first once it is idle; a new source that does not fit is
// refused, never queued. It knows nothing of SIP, and nothing of time but
// the instants it is handed, so it is tested without a clock.
//
//	src -> Table.Touch -> Entry: Penalised? Bucket.Take? BytesIn += n
//	dst <- Entry.Spend(n): BytesOut + n <= BytesIn
package sourcelimit

import (
	"net/netip"
	"time"
)

// Bucket is a token bucket: Rate tokens a second, at most Burst at once.
// The zero Bucket is full on first use.
type Bucket struct {
	tokens float64
	at     time.Time // last refill; zero: never used
}

// Take takes one token at now, reporting whether there was one.
func (b *Bucket) Take(now time.Time, rate float64, burst int) bool {
	if b.at.IsZero() {
		b.tokens, b.at = float64(burst), now
	} else if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(burst), b.tokens+d.Seconds()*rate)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Entry is one source. The caller reads and changes it only while it holds
// the lock that guards the table.
type Entry[V any] struct {
	Addr      netip.Addr
	FirstSeen time.Time
	Seen      time.Time // last datagram or request
	Bucket    Bucket
	// BytesIn are the bytes admitted from the source; BytesOut those sent
	// to it (Spend).
	BytesIn, BytesOut uint64
	// Failures are failed attempts (registrations refused) since the last
	// success; PenaltyUntil, while in the future, refuses everything.
	Failures     int
	PenaltyUntil time.Time
	// V is the caller's own per-source state.
	V V

	prev, next *Entry[V] // towards the most / least recently seen
}

// Penalised reports whether the source is serving a penalty at now.
func (e *Entry[V]) Penalised(now time.Time) bool { return now.Before(e.PenaltyUntil) }

// Fail counts a failed attempt; at max failures the source is penalised
// for d from now and its count starts again. It reports whether this
// failure started a penalty. max <= 0 counts without penalising.
func (e *Entry[V]) Fail(now time.Time, max int, d time.Duration) bool {
	e.Failures++
	if max <= 0 || e.Failures < max {
		return false
	}
	e.Failures = 0
	e.PenaltyUntil = now.Add(d)
	return true
}

// Spend accounts n bytes about to be sent to the source: allowed while the
// source will not have been sent more than it sent.
func (e *Entry[V]) Spend(n int) bool {
	if n < 0 || e.BytesOut+uint64(n) > e.BytesIn {
		return false
	}
	e.BytesOut += uint64(n)
	return true
}

// Table holds at most Max entries. It is not safe for concurrent use: the
// caller guards it (and its entries) with its own lock.
type Table[V any] struct {
	// Max bounds the entries; 0 means 1024.
	Max int
	// MinIdle: an entry seen this recently is never evicted to make room
	// (a source still sending keeps its bucket and penalty); a newcomer
	// finding only such entries is refused.
	MinIdle time.Duration
	// OnEvict, when set, is told of an entry before it is evicted or
	// expired, so that what it counted is not lost.
	OnEvict func(*Entry[V])

	m          map[netip.Addr]*Entry[V]
	head, tail *Entry[V] // most, least recently seen
}

// evictScan is how many of the least recently seen entries a newcomer
// looks through for one to evict; penalised sources are passed over.
const evictScan = 8

func (t *Table[V]) max() int {
	if t.Max > 0 {
		return t.Max
	}
	return 1024
}

// Len is the number of entries.
func (t *Table[V]) Len() int { return len(t.m) }

// Lookup returns the entry of a, or nil; it does not count as seen.
func (t *Table[V]) Lookup(a netip.Addr) *Entry[V] { return t.m[a] }

// Touch returns the entry of a, made if need be, marked seen at now. It
// returns nil when a is new and the table is full of entries that may not
// be evicted: the source is refused.
func (t *Table[V]) Touch(a netip.Addr, now time.Time) *Entry[V] {
	if e := t.m[a]; e != nil {
		e.Seen = now
		t.unlink(e)
		t.pushFront(e)
		return e
	}
	if t.m == nil {
		t.m = map[netip.Addr]*Entry[V]{}
	}
	if len(t.m) >= t.max() && !t.evictOne(now) {
		return nil
	}
	e := &Entry[V]{Addr: a, FirstSeen: now, Seen: now}
	t.m[a] = e
	t.pushFront(e)
	return e
}

// evictOne makes room: the least recently seen entry that has been idle
// for MinIdle and is not penalised, among the last few.
func (t *Table[V]) evictOne(now time.Time) bool {
	e := t.tail
	for i := 0; e != nil && i < evictScan; i, e = i+1, e.prev {
		if now.Sub(e.Seen) < t.MinIdle {
			return false // the rest were seen later still
		}
		if !e.Penalised(now) {
			t.remove(e)
			return true
		}
	}
	return false
}

// Remove forgets a (a source that became known).
func (t *Table[V]) Remove(a netip.Addr) {
	if e := t.m[a]; e != nil {
		t.unlinkDelete(e)
	}
}

// Expire removes the entries idle for ttl or longer that are not
// penalised, telling OnEvict of each.
func (t *Table[V]) Expire(now time.Time, ttl time.Duration) {
	for e := t.tail; e != nil; {
		prev := e.prev
		if now.Sub(e.Seen) < ttl {
			return
		}
		if !e.Penalised(now) {
			t.remove(e)
		}
		e = prev
	}
}

// Each calls fn for every entry, most recently seen first.
func (t *Table[V]) Each(fn func(*Entry[V])) {
	for e := t.head; e != nil; e = e.next {
		fn(e)
	}
}

func (t *Table[V]) remove(e *Entry[V]) {
	if t.OnEvict != nil {
		t.OnEvict(e)
	}
	t.unlinkDelete(e)
}

func (t *Table[V]) unlinkDelete(e *Entry[V]) {
	t.unlink(e)
	delete(t.m, e.Addr)
}

func (t *Table[V]) pushFront(e *Entry[V]) {
	e.prev, e.next = nil, t.head
	if t.head != nil {
		t.head.prev = e
	}
	t.head = e
	if t.tail == nil {
		t.tail = e
	}
}

func (t *Table[V]) unlink(e *Entry[V]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else if t.head == e {
		t.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else if t.tail == e {
		t.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
