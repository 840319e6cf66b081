package sipproxy

import (
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestByeAnswerHeldForRecord: the answer to a BYE reaches the caller only
// once Options.Recorded says the call's usage record is stored, and the
// held answer is counted while it waits (Stats.DurableHeld, the status's
// byes_held) and at most (DurableHeldTop).
func TestByeAnswerHeldForRecord(t *testing.T) {
	stored := make(chan struct{})
	var mu sync.Mutex
	var asked []string
	r := newRig(t, "udp", func(o *Options, _ *rig) {
		o.DurableWait = time.Minute // the test lets it go
		o.Recorded = func(callID string) <-chan struct{} {
			mu.Lock()
			asked = append(asked, callID)
			mu.Unlock()
			return stored
		}
	})
	s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	byeDone := make(chan error, 1)
	go func() { byeDone <- s.Bye(ctxT(t)) }()
	r.edge.wantRequest(sip.BYE)
	waitFor(t, "the BYE's answer held", func() bool { return r.p.Stats().DurableHeld == 1 })
	select {
	case err := <-byeDone:
		t.Fatalf("the caller's BYE ended (%v) before the record was stored", err)
	case <-time.After(200 * time.Millisecond):
		// Still held: nothing to wait for here but the absence of an
		// answer, so a fixed look is the test.
	}
	close(stored)
	if err := <-byeDone; err != nil {
		t.Fatalf("BYE: %v", err)
	}
	st := r.p.Stats()
	if st.DurableHeld != 0 || st.DurableHeldTop != 1 || st.DurableWaits != 1 || st.DurableTimeout != 0 {
		t.Errorf("held %d, at most %d, waits %d, timeouts %d; want 0, 1, 1, 0", st.DurableHeld, st.DurableHeldTop, st.DurableWaits, st.DurableTimeout)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != s.InviteRequest.CallID().Value() {
		t.Errorf("Recorded asked for %q, want the call's Call-ID once", asked)
	}
}
