package dialog

import (
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

// A call between two of the device's lines passes the agent twice with one
// Call-ID: each leg is tracked, ended and reported on its own line.
func TestHairpinLegs(t *testing.T) {
	var ended []Call
	tr := New(Options{OnEnd: func(c Call) { ended = append(ended, c) }})
	t0 := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	out := Call{CallID: "hp@pbx", Line: "+15551230001", Direction: detect.Outbound, Remote: "+15551230002", StartedAt: t0}
	in := Call{CallID: "hp@pbx", Line: "+15551230002", Direction: detect.Inbound, Remote: "+15551230001", StartedAt: t0.Add(20 * time.Millisecond), Hairpin: true}
	if !tr.Begin(out) || !tr.Begin(in) {
		t.Fatal("a leg of the hairpin call was not tracked")
	}
	if tr.Begin(in) {
		t.Fatal("the second leg's retransmission was tracked again")
	}
	if got := tr.Stats().Active; got != 2 {
		t.Fatalf("active calls = %d, want the 2 legs", got)
	}
	inKey := LegKey("hp@pbx", true)
	tr.Response(inKey, 200, t0.Add(2*time.Second), 0)
	tr.Response("hp@pbx", 200, t0.Add(2*time.Second+time.Millisecond), 0)
	c, ok := tr.Get(inKey)
	if !ok || c.Line != in.Line || c.State != Confirmed {
		t.Fatalf("second leg = %+v, %v; want confirmed on %s", c, ok, in.Line)
	}
	tr.Bye(inKey, t0.Add(10*time.Second))
	tr.Bye("hp@pbx", t0.Add(10*time.Second+time.Millisecond))
	if len(ended) != 2 {
		t.Fatalf("%d calls ended, want 2 legs", len(ended))
	}
	lines := map[string]detect.Direction{}
	for _, c := range ended {
		lines[c.Line] = c.Direction
		if c.Disposition != Answered || c.Duration() < 7*time.Second {
			t.Errorf("leg on %s: %s for %s, want answered for about 8 s", c.Line, c.Disposition, c.Duration())
		}
	}
	if lines[out.Line] != detect.Outbound || lines[in.Line] != detect.Inbound {
		t.Fatalf("legs ended = %v, want one outbound on each line's side", lines)
	}
	snap := tr.Snapshot()
	if len(snap) != 0 {
		t.Fatalf("snapshot after both BYEs = %v", snap)
	}
	// Kept across a restart, the two legs stay two calls.
	tr.Begin(out)
	tr.Begin(in)
	tr2 := New(Options{})
	if got := len(tr2.Restore(tr.Snapshot())); got != 2 {
		t.Fatalf("restored %d legs, want 2", got)
	}
	if _, ok := tr2.Get(inKey); !ok {
		t.Fatal("restored second leg not found by its key")
	}
}
