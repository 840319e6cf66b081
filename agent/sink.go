package agent

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/store"
)

// recordSink carries records from the signalling path to the store. The
// tracker hands over ended calls on the SIP path, which must never wait for
// an fsync, a store merge or a compaction, so Put only queues; one writer
// appends what has gathered in a single group commit. The queue is bounded
// so a store that stops taking records cannot eat the device's memory;
// records past the bound are counted and logged, never silently lost.
type recordSink struct {
	st    *store.Store
	log   *slog.Logger
	max   int
	mu    sync.Mutex
	queue []queued
	// urgent: a record someone waits for is queued; the writer stores it
	// without letting others gather first (within durableEvery).
	urgent bool
	// waiting is what the writer's timer waits for (see put).
	waiting waitFor
	// lastFlush is when the last flush began; only run touches it.
	lastFlush time.Time
	wake      chan struct{}
	done      chan struct{}
	// onFlush, when set, is told that records were stored (the uploader
	// looks at the outbox at once).
	onFlush func()
	// checkpoint, when set, writes the checkpoint of the calls in
	// progress; run calls it between appends (see callCheckpoint), with
	// final set at the end. It returns a channel when there are no calls
	// to checkpoint: run stops its ticker until that closes.
	checkpoint func(final bool) <-chan struct{}

	written atomic.Uint64
	dropped atomic.Uint64
	failed  atomic.Uint64
	// highWater is the most records ever queued at once: how far the
	// store fell behind the signalling path (docs/sip.md).
	highWater atomic.Int64
}

// waitFor is what the writer waits for while records gather.
type waitFor uint8

const (
	waitNone    waitFor = iota // not waiting: storing, or idle
	waitGather                 // gatherFor after the first record
	waitDurable                // durableEvery after the last commit
)

// maxQueuedRecords is about ten minutes of a busy PBX's calls, and 2 MB.
const maxQueuedRecords = 10_000

func newRecordSink(st *store.Store, log *slog.Logger) *recordSink {
	return &recordSink{st: st, log: log, max: maxQueuedRecords, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// queued is a record waiting for the writer, and, for PutDurable, the
// channel closed once it is stored.
type queued struct {
	p    store.Payload
	done chan struct{}
}

// Put queues a record; it never blocks.
func (k *recordSink) Put(p store.Payload) { k.put(queued{p: p}) }

// PutDurable queues a record and returns a channel closed once it is
// durable in the store; nil when the queue was full and the record was
// dropped. It never blocks; the writer stores such a record at once,
// without the gathering delay (or with the records of the last
// durableEvery, see there), since someone waits for it (the BYE's
// answer: a call the caller saw end must not be lost to a crash).
func (k *recordSink) PutDurable(p store.Payload) <-chan struct{} {
	q := queued{p: p, done: make(chan struct{})}
	if !k.put(q) {
		return nil
	}
	return q.done
}

func (k *recordSink) put(q queued) bool {
	k.mu.Lock()
	if len(k.queue) >= k.max {
		k.mu.Unlock()
		if k.dropped.Add(1)%1000 == 1 {
			k.log.Error("record queue full: the store is not taking records; records dropped", "dropped", k.dropped.Load())
		}
		return false
	}
	k.queue = append(k.queue, q)
	if q.done != nil {
		k.urgent = true
	}
	if n := int64(len(k.queue)); n > k.highWater.Load() {
		k.highWater.Store(n) // under mu: no lost update
	}
	// The writer, waiting for the mark of the records someone waits for,
	// stores this one then too: no need to wake it (a wake-up per call
	// was a fair part of the writer's cost).
	wake := k.waiting != waitDurable || len(k.queue) >= 256
	k.mu.Unlock()
	if wake {
		select {
		case k.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// setCheckpoint sets the function that checkpoints the calls in progress.
func (k *recordSink) setCheckpoint(fn func(final bool) <-chan struct{}) {
	k.mu.Lock()
	k.checkpoint = fn
	k.mu.Unlock()
}

func (k *recordSink) saveCheckpoint(final bool) <-chan struct{} {
	k.mu.Lock()
	fn := k.checkpoint
	k.mu.Unlock()
	if fn != nil {
		return fn(final)
	}
	return nil
}

// gatherFor is how long the writer lets records gather after the first
// one: a busy PBX ends calls every few milliseconds, and one commit (one
// fsync) per 100 ms instead of one per call keeps the disk and the CPU
// for the calls. Records are not acknowledged to anyone before they are
// stored, so the delay loses nothing.
const gatherFor = 100 * time.Millisecond

// durableEvery spaces the commits of records someone waits for (a BYE's
// answer, see PutDurable): such a record is stored at once when the last
// commit began at least this long ago, else at that mark, with the others
// that came meanwhile. A PBX ending fewer than 1/durableEvery answered
// calls a second thus waits one commit, as before; past that rate the
// commits stop following the calls. A commit's fsyncs, and the wake-ups
// of the Go scheduler while the writer blocks in them, were most of the
// agent's CPU per call at 100 calls/s (about 0.9 of 2.4 ms: a commit per
// BYE); at 20 ms (at most 50 commits/s) two calls share one, at the cost
// of at most 20 ms more before the BYE's answer, far inside its 500 ms
// retransmission timer (T1).
const durableEvery = 20 * time.Millisecond

// run appends queued records until ctx ends, then writes what is left.
func (k *recordSink) run(ctx context.Context) {
	defer close(k.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	tick := time.NewTicker(checkpointEvery)
	defer tick.Stop()
	// idle, when set, is the checkpoint's word that no call is up: the
	// ticker stops until it closes at the next call, so an agent without
	// calls is not woken every second for nothing.
	var idle <-chan struct{}
	for {
		select {
		case <-ctx.Done():
			k.flush()
			k.saveCheckpoint(true)
			return
		case <-tick.C:
			if idle = k.saveCheckpoint(false); idle != nil {
				tick.Stop()
			}
		case <-idle:
			idle = nil
			tick.Reset(checkpointEvery)
		case <-k.wake:
			k.gather(ctx, timer)
		}
	}
}

// gather waits until what is queued is due (gatherFor after the first
// record, durableEvery after the last commit began for a record someone
// waits for, or at once for a full batch), then stores it.
func (k *recordSink) gather(ctx context.Context, timer *time.Timer) {
	start := time.Now()
	for {
		k.mu.Lock()
		n, urgent := len(k.queue), k.urgent
		var due time.Time
		due, k.waiting = start.Add(gatherFor), waitGather
		if d := k.lastFlush.Add(durableEvery); urgent && d.Before(due) {
			due, k.waiting = d, waitDurable
		}
		wait := time.Until(due)
		if n == 0 || n >= 256 || wait <= 0 {
			k.waiting = waitNone
		}
		k.mu.Unlock()
		if n == 0 {
			return // already written by the flush that just ran
		}
		if n >= 256 || wait <= 0 {
			k.flush()
			return
		}
		// Since Go 1.23 Reset discards a value the timer sent but nobody
		// received, so a stale expiry cannot end the next wait early.
		timer.Reset(wait)
		select {
		case <-timer.C:
			k.flush()
			return
		case <-k.wake:
			// More records, perhaps one someone waits for: due again.
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
			k.mu.Lock()
			k.waiting = waitNone
			k.mu.Unlock()
			return // run writes what is left
		}
	}
}

func (k *recordSink) flush() {
	k.lastFlush = time.Now()
	for {
		k.mu.Lock()
		batch := k.queue
		k.queue, k.urgent, k.waiting = nil, false, waitNone
		k.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		for len(batch) > 0 {
			n := min(len(batch), 256)
			ps := make([]store.Payload, n)
			for i := range n {
				ps[i] = batch[i].p
			}
			_, err := k.st.Append(context.Background(), ps...)
			if err != nil {
				// Full or broken store: keep the records queued (up to the
				// bound) and try again on the next wake-up.
				k.failed.Add(uint64(n))
				k.log.Error("records not stored", "records", n, "err", err)
				k.mu.Lock()
				k.queue = append(batch, k.queue...)
				if len(k.queue) > k.max {
					k.dropped.Add(uint64(len(k.queue) - k.max))
					k.queue = k.queue[:k.max]
				}
				k.mu.Unlock()
				return
			}
			k.written.Add(uint64(n))
			for _, q := range batch[:n] {
				if q.done != nil {
					close(q.done)
				}
			}
			batch = batch[n:]
			if k.onFlush != nil {
				k.onFlush()
			}
		}
	}
}

// wait blocks until run has written what was queued when ctx ended.
func (k *recordSink) wait(timeout time.Duration) {
	select {
	case <-k.done:
	case <-time.After(timeout):
		k.log.Error("records still queued at shutdown", "queued", k.queued())
	}
}

func (k *recordSink) queued() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.queue)
}

// usageOf turns an ended call into its usage record.
func usageOf(c dialog.Call) *store.Usage {
	return &store.Usage{
		CallID:      c.CallID,
		Line:        c.Line,
		Direction:   c.Direction.String(),
		Remote:      c.Remote,
		StartedAt:   c.StartedAt.UTC(),
		AnsweredAt:  c.AnsweredAt.UTC(),
		EndedAt:     c.EndedAt.UTC(),
		DurationS:   math.Round(c.Duration().Seconds()*1000) / 1000,
		Disposition: string(c.Disposition),
		FinalStatus: c.FinalStatus,
		BlockedBy:   c.BlockedBy,
	}
}

// durableCalls hands the proxy, for a call that ended, the channel closed
// once its usage record is stored, so that the answer to a BYE is relayed
// only after the record is durable. Bounded: entries nobody asked for (calls
// that ended without a BYE through the proxy) are pruned once stored.
type durableCalls struct {
	mu sync.Mutex // guards m
	m  map[string]<-chan struct{}
}

// maxDurableCalls bounds the entries kept; past it, stored ones go first.
const maxDurableCalls = 4096

func (d *durableCalls) add(callID string, done <-chan struct{}) {
	if done == nil || callID == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]<-chan struct{}{}
	}
	if len(d.m) >= maxDurableCalls {
		for id, ch := range d.m {
			select {
			case <-ch:
				delete(d.m, id)
			default:
			}
		}
		if len(d.m) >= maxDurableCalls {
			return // the store is far behind: the BYE will not wait for this one
		}
	}
	d.m[callID] = done
}

// take returns the call's channel, nil when there is none, and forgets it.
func (d *durableCalls) take(callID string) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := d.m[callID]
	delete(d.m, callID)
	return ch
}
