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
	// without letting others gather first.
	urgent bool
	wake   chan struct{}
	done   chan struct{}
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
// without the gathering delay, since someone waits for it (the BYE's
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
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
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

// run appends queued records until ctx ends, then writes what is left.
func (k *recordSink) run(ctx context.Context) {
	defer close(k.done)
	gather := time.NewTimer(time.Hour)
	gather.Stop()
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
			if k.queued() == 0 {
				continue // already written by the flush that just ran
			}
			if k.queued() >= 256 || k.isUrgent() {
				k.flush()
				continue
			}
			gather.Reset(gatherFor)
		gathering:
			for {
				select {
				case <-gather.C:
					break gathering
				case <-k.wake:
					// A record someone waits for ends the gathering.
					if k.isUrgent() || k.queued() >= 256 {
						gather.Stop()
						break gathering
					}
				case <-ctx.Done():
					gather.Stop()
					break gathering
				}
			}
			k.flush()
		}
	}
}

func (k *recordSink) isUrgent() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.urgent
}

func (k *recordSink) flush() {
	for {
		k.mu.Lock()
		batch := k.queue
		k.queue, k.urgent = nil, false
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
		Hairpin:     c.Hairpin,
		EndedBy:     string(c.EndedBy),
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
