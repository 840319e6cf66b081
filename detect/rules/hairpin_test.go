package rules_test

import (
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
)

// A call from one of the device's lines to another is, on its second leg,
// an inbound call from the first line. The first line goes on dialing,
// presenting its own number: that is not a bridge of the inbound caller.
// Presenting another line's inbound caller still is.
func TestHairpinIsNoBridge(t *testing.T) {
	const lineA, lineB = "+15551230001", "+15551230002"
	p := policy.Default()
	p.Lines = []string{lineA, lineB}
	p.Trunking.MaxDialogsPerLine = 2 // a PBX line with call waiting
	p.Pacing.Action = policy.Off     // two calls 5 s apart are the point here
	e := newEngine(t, p, rules.Options{})
	decide := func(id, from, to string, dir detect.Direction, l, remote string, at time.Duration) detect.Verdict {
		req := invite(id, from, to, dir)
		return e.Decide(&detect.Event{At: t0.Add(at), Direction: dir, Line: l, Remote: remote, Request: req})
	}
	if v := decide("hp", lineA, lineB, detect.Outbound, lineA, lineB, 0); v.Block {
		t.Fatalf("hairpin first leg blocked: %+v", v)
	}
	if v := decide("hp", lineA, lineB, detect.Inbound, lineB, lineA, 20*time.Millisecond); v.Block {
		t.Fatalf("hairpin second leg blocked: %+v", v)
	}
	if v := decide("next", lineA, "+12125550100", detect.Outbound, lineA, "+12125550100", 5*time.Second); v.Block {
		t.Fatalf("line A's next call, while its hairpin call rings, blocked by %s", v.Rule)
	}
	// Line B presenting line A (its inbound caller) to someone else is
	// the bridge the rule is there for.
	if v := decide("fwd", lineA, "+12125550111", detect.Outbound, lineB, "+12125550111", 6*time.Second); !v.Block || v.Rule != policy.ForwardingBridge {
		t.Fatalf("line B presenting its inbound caller: %+v, want blocked by %s", v, policy.ForwardingBridge)
	}
}
