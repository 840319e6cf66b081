package agent

import (
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/store/storetest"
)

// The checkpoint is written when the answered calls change, not while they
// stand still (until it is checkpointRefresh old), nor for attempts and
// calls answered a moment ago; at a clean stop it takes every call.
func TestCallCheckpoint(t *testing.T) {
	db := storetest.Open(t)
	tr := dialog.New(dialog.Options{})
	cp := &callCheckpoint{store: db.Store, tracker: tr, log: quiet}
	call := func(id string) dialog.Saved {
		return dialog.Saved{CallID: id, Line: "+15551230001", Direction: detect.Outbound, State: dialog.Confirmed,
			StartedAt: time.Now().Add(-time.Minute), AnsweredAt: time.Now().Add(-50 * time.Second)}
	}
	read := func() (time.Time, int) {
		t.Helper()
		c, err := db.CallsInProgress()
		if err != nil {
			t.Fatal(err)
		}
		return c.At, len(c.Calls)
	}
	tr.Restore([]dialog.Saved{call("a@pbx")})
	steps := []struct {
		name    string
		do      func()
		final   bool
		written bool
		calls   int
	}{
		{"first call", func() {}, false, true, 1},
		{"nothing changed", func() {}, false, false, 1},
		{"a second call", func() { tr.Restore([]dialog.Saved{call("b@pbx")}) }, false, true, 2},
		{"nothing changed again", func() {}, false, false, 2},
		{"an attempt ringing", func() {
			c := call("ringing@pbx")
			c.State, c.AnsweredAt = dialog.Early, time.Time{}
			tr.Restore([]dialog.Saved{c})
		}, false, false, 2},
		{"a call just answered", func() {
			c := call("new@pbx")
			c.AnsweredAt = time.Now()
			tr.Restore([]dialog.Saved{c})
		}, false, false, 2},
		{"stale", func() { cp.at = cp.at.Add(-checkpointRefresh) }, false, true, 2},
		{"clean stop: every call", func() {}, true, true, 4},
	}
	for _, st := range steps {
		before, _ := read()
		st.do()
		cp.save(st.final)
		at, n := read()
		if written := !at.Equal(before); written != st.written || n != st.calls {
			t.Errorf("%s: written %v with %d calls, want written %v with %d", st.name, written, n, st.written, st.calls)
		}
	}
}
