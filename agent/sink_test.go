package agent

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func call(i int) dialog.Call {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	return dialog.Call{
		CallID: "c", Line: "+15551230001", Direction: detect.Outbound, Remote: "+15557654321",
		StartedAt: t0, AnsweredAt: t0.Add(2 * time.Second), EndedAt: t0.Add(time.Duration(62+i) * time.Second),
		FinalStatus: 200, Disposition: dialog.Answered,
	}
}

func pendingUsage(t *testing.T, st *store.Store) []store.Record {
	t.Helper()
	recs, err := st.Pending(store.TypeUsage, store.ReadOptions{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestRecordSink: ended calls put on the sink reach the store as usage
// records, in one or a few commits, and what is queued at shutdown is
// written before run returns.
func TestRecordSink(t *testing.T) {
	db := storetest.Open(t)
	k := newRecordSink(db.Store, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	go k.run(ctx)
	for i := range 500 {
		k.Put(usageOf(call(i)))
	}
	deadline := time.Now().Add(10 * time.Second)
	for k.written.Load() < 500 {
		if time.Now().After(deadline) {
			t.Fatalf("written %d of 500", k.written.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 7 {
		k.Put(usageOf(call(i)))
	}
	cancel()
	k.wait(10 * time.Second)
	recs := pendingUsage(t, db.Store)
	if len(recs) != 507 {
		t.Fatalf("%d usage records stored, want 507", len(recs))
	}
	p, err := recs[3].Decode()
	if err != nil {
		t.Fatal(err)
	}
	u := p.(*store.Usage)
	if u.Line != "+15551230001" || u.Remote != "+15557654321" || u.Direction != "outbound" ||
		u.Disposition != "answered" || u.DurationS != 63 || u.FinalStatus != 200 {
		t.Errorf("stored usage = %+v", u)
	}
	if k.dropped.Load() != 0 || k.failed.Load() != 0 {
		t.Errorf("dropped %d, failed %d", k.dropped.Load(), k.failed.Load())
	}
}

// TestRecordSinkBound: with the store not taking records, the queue stops
// at its bound and counts what it could not keep; Put never blocks.
func TestRecordSinkBound(t *testing.T) {
	db := storetest.Open(t)
	k := newRecordSink(db.Store, quiet)
	k.max = 10
	done := make(chan struct{})
	go func() {
		for i := range 25 {
			k.Put(usageOf(call(i)))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Put blocked")
	}
	if k.queued() != 10 || k.dropped.Load() != 15 {
		t.Errorf("queued %d, dropped %d; want 10 and 15", k.queued(), k.dropped.Load())
	}
}

func TestUsageOf(t *testing.T) {
	c := call(0)
	c.Disposition, c.AnsweredAt, c.FinalStatus, c.BlockedBy = dialog.Blocked, time.Time{}, 403, "pacing"
	u := usageOf(c)
	if u.DurationS != 0 || u.Disposition != "blocked" || u.BlockedBy != "pacing" || !u.AnsweredAt.IsZero() {
		t.Errorf("usage of a blocked call = %+v", u)
	}
	c = call(0)
	c.EndedAt = c.AnsweredAt.Add(1234567 * time.Microsecond)
	if got := usageOf(c).DurationS; got != 1.235 {
		t.Errorf("duration %v, want 1.235 (ms precision)", got)
	}
}

// TestCheckpointResumes: with no call the writer stops checkpointing (no
// wake-ups for nothing); the next call starts it again.
func TestCheckpointResumes(t *testing.T) {
	db := storetest.Open(t)
	tr := dialog.New(dialog.Options{})
	k := newRecordSink(db.Store, quiet)
	cp := &callCheckpoint{store: db.Store, tracker: tr, log: quiet}
	k.setCheckpoint(cp.save)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); k.wait(10 * time.Second) }()
	go k.run(ctx)
	// The first tick writes the empty checkpoint, then the ticker stops.
	time.Sleep(checkpointEvery + checkpointEvery/2)
	now := time.Now()
	tr.Restore([]dialog.Saved{{CallID: "a@pbx", Line: "+15551230001", Direction: detect.Outbound, State: dialog.Confirmed,
		StartedAt: now.Add(-time.Minute), AnsweredAt: now.Add(-50 * time.Second)}})
	deadline := time.Now().Add(5 * checkpointEvery)
	for {
		c, err := db.CallsInProgress()
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Calls) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("call not checkpointed within %v of its start", 5*checkpointEvery)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
