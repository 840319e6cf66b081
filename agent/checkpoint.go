package agent

import (
	"encoding/json"
	"log/slog"
	"maps"
	"time"

	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/store"
)

// Calls in progress are checkpointed to the store so that a call that
// outlives the agent (a restart, a crash, a power cut) is still metered: its
// BYE reaches the next agent, which takes the call back from the checkpoint.
//
// The checkpoint holds the answered calls (the minutes are what is billed)
// once they have been up for checkpointEvery: a dialer's unanswered
// attempts and its seconds-long calls come and go by the thousand a
// second, and writing each of them would cost the disk and the CPU for
// little to bill. It is written at most every checkpointEvery when those
// calls changed, every checkpointRefresh while calls are up (its time says
// the agent was alive then), and at a clean stop. A crash thus loses the
// calls answered in its last second or two and the attempts still ringing.
const (
	checkpointEvery   = time.Second
	checkpointRefresh = 10 * time.Second
)

// resumeAfter is how long after the checkpoint its calls are taken back: a
// restart (the unit restarts the agent after 1 s) is well inside it, and
// the UAs retransmit a BYE that came meanwhile for 32 s. After a longer
// stop the calls are metered as ended at the checkpoint, rather than
// running on until the longest call expires them.
const resumeAfter = 30 * time.Second

// callCheckpoint writes the checkpoint. Only the record sink's goroutine
// calls save, between its appends, and that order is what keeps a call
// from being metered twice: a call in a checkpoint ended after its
// snapshot, so its usage record reaches the store after the checkpoint,
// and storing the record removes the call from it (see
// store.SaveCallsInProgress).
type callCheckpoint struct {
	store   *store.Store
	tracker *dialog.Tracker
	log     *slog.Logger
	last    map[string]dialog.Saved // what the store holds
	docs    map[string][]byte       // their documents, reused while unchanged
	at      time.Time               // when it was written
	failed  bool
}

// save writes the checkpoint when it is due. It returns, when there is
// nothing to checkpoint (no call tracked and none in the stored checkpoint),
// a channel closed at the next call, until which the sink need not call it
// again (see Tracker.Idle); nil otherwise.
func (c *callCheckpoint) save(final bool) <-chan struct{} {
	now := time.Now()
	cur := map[string]dialog.Saved{}
	for _, s := range c.tracker.Snapshot() {
		if final || s.State == dialog.Confirmed && now.Sub(s.AnsweredAt) >= checkpointEvery {
			cur[store.CallKey(s.CallID, s.Hairpin)] = s
		}
	}
	changed := c.last == nil || !maps.Equal(cur, c.last)
	stale := len(cur) > 0 && now.Sub(c.at) >= checkpointRefresh
	if !changed && !stale && !final {
		return c.idle()
	}
	docs := make(map[string][]byte, len(cur))
	for id, s := range cur {
		if prev, ok := c.last[id]; ok && prev == s && c.docs[id] != nil {
			docs[id] = c.docs[id] // a PBX with thousands up changes few a second
			continue
		}
		doc, err := json.Marshal(s)
		if err != nil {
			c.log.Error("call in progress not checkpointed", "err", err)
			continue
		}
		docs[id] = doc
	}
	if err := c.store.SaveCallsInProgress(now, docs); err != nil {
		if !c.failed {
			c.log.Error("calls in progress not checkpointed; a crash now would leave them unmetered", "calls", len(cur), "err", err)
		}
		c.failed = true
		return nil
	}
	if c.failed {
		c.log.Info("calls in progress checkpointed again", "calls", len(cur))
	}
	c.last, c.docs, c.at, c.failed = cur, docs, now, false
	if final && len(cur) > 0 {
		c.log.Info("calls in progress kept for the next start", "calls", len(cur))
	} else {
		c.log.Debug("calls in progress checkpointed", "calls", len(cur))
	}
	return c.idle()
}

// idle is Tracker.Idle once the stored checkpoint holds no call.
func (c *callCheckpoint) idle() <-chan struct{} {
	if len(c.last) > 0 || c.failed {
		return nil
	}
	return c.tracker.Idle()
}

// savedCalls is what agents before the checkpoint kept at a clean stop.
type savedCalls struct {
	At    time.Time      `json:"at"`
	Calls []dialog.Saved `json:"calls"`
}

// resumeCalls takes back the calls of the last checkpoint: their BYEs come
// to this agent. Checkpointed too long ago, they are metered as ended at
// the checkpoint. Either way the checkpoint stays until the sink replaces
// it, so a crash right after this start loses nothing either.
func (a *Agent) resumeCalls(sink *recordSink) {
	cp, err := a.store.CallsInProgress()
	if err != nil {
		a.log.Error("calls in progress not read", "err", err)
		return
	}
	at, calls := cp.At, make([]dialog.Saved, 0, len(cp.Calls))
	for id, doc := range cp.Calls {
		var s dialog.Saved
		if err := json.Unmarshal(doc, &s); err != nil || store.CallKey(s.CallID, s.Hairpin) != id {
			a.log.Error("call in progress not read", "err", err)
			continue
		}
		calls = append(calls, s)
	}
	if len(calls) == 0 && cp.Legacy != nil {
		var old savedCalls
		if err := json.Unmarshal(cp.Legacy, &old); err != nil {
			a.log.Error("calls in progress not read", "err", err)
		}
		at, calls = old.At, old.Calls
	}
	if len(calls) == 0 {
		return
	}
	if time.Since(at) <= resumeAfter {
		for _, c := range a.tracker.Restore(calls) {
			a.rules.CallResumed(c)
		}
		a.log.Info("calls in progress resumed", "calls", len(calls), "checkpoint_age", time.Since(at).Round(time.Millisecond))
		return
	}
	for _, s := range calls {
		c := dialog.Call{CallID: s.CallID, Line: s.Line, Direction: s.Direction, StartedAt: s.StartedAt,
			AnsweredAt: s.AnsweredAt, EndedAt: at, Expired: true, Disposition: dialog.Answered}
		if s.AnsweredAt.IsZero() {
			c.Disposition, c.FinalStatus = dialog.Failed, 408
		}
		sink.Put(usageOf(c))
	}
	a.log.Warn("calls in progress checkpointed too long ago: metered as ended then", "calls", len(calls), "checkpoint_at", at)
}
