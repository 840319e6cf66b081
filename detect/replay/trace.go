// Package replay runs labelled call traces through the rules in simulated
// time: the behaviour models of `make eval`, the golden cases, and the
// tests of the rules all go through it, and through the same rule code the
// proxy runs.
package replay

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

// Class labels a trace with what it is, so the evaluation can tell a false
// block from a detection.
type Class string

const (
	// Human: a person using a line as the terms allow. Any block is false.
	Human Class = "human"
	// Machine: machine-paced dialing; the pacing rule must catch it.
	Machine Class = "machine"
	// Forwarding: a forwarding or bridging scenario; a forwarding.* rule
	// must catch it.
	Forwarding Class = "forwarding"
	// Trunking: more dialogs or registrations on a line than allowed.
	Trunking Class = "trunking"
	// Honest: PBX use that looks busy but is allowed; any block is false.
	Honest Class = "honest"
)

// Call is one call attempt in a trace, as the device's SIP would show it.
// The replay turns it into SIP requests and responses at the given times.
type Call struct {
	// Start is when the initial INVITE passes the agent, from the start
	// of the trace.
	Start     time.Duration
	Direction detect.Direction
	// Line is the Leadport line (E.164). Empty for a call not on a line,
	// such as a PBX's onward leg that presents the original caller.
	Line string
	// Remote is the other party: the callee of an outbound call (an E.164
	// number or a dial string such as "*72+15551234567"), the caller of an
	// inbound one.
	Remote string
	// From is the identity the caller presents in From (outbound); empty:
	// the line. PAI and RPID, when set, add P-Asserted-Identity and
	// Remote-Party-ID headers with that number.
	From string
	PAI  string
	RPID string
	// Diversion lists numbers for Diversion headers (RFC 5806), first the
	// most recent diversion; each gets ;reason=unconditional.
	Diversion []string
	// HistoryInfo lists History-Info header values verbatim (RFC 7044).
	HistoryInfo []string
	// Source is the address the INVITE comes from (ip:port); empty: the
	// trace's default for its direction.
	Source string

	// Ring is the time from the INVITE to the final response (or to the
	// CANCEL when Status is 487).
	Ring time.Duration
	// Status is the final response: 200 answered (also by voicemail),
	// 486 busy, 480 or 408 no answer, 487 the caller gave up (a CANCEL is
	// sent at Start+Ring), 3xx a redirect from the local side (inbound).
	Status int
	// Early, when non-zero, is a provisional response sent at Start+1s
	// before the final one (180 or 183; 181 for a call being forwarded).
	// EarlyDiversion adds a Diversion header naming the line to it.
	Early          int
	EarlyDiversion bool
	// Talk is the time from the 200 OK to the BYE, for answered calls.
	Talk time.Duration
	// ReferAfter, when non-zero, sends a REFER inside the dialog this long
	// after the answer (a transfer).
	ReferAfter time.Duration
	// Bye says who ends an answered call: ByeCaller (the default when
	// empty) or ByeCallee. Who hangs up, and when, is a pacing signal:
	// a dialer's answering-machine detection ends calls from the caller's
	// side seconds after the answer.
	Bye Party
}

// Party is one end of a call.
type Party string

const (
	ByeCaller Party = "caller"
	ByeCallee Party = "callee"
)

// Register is one REGISTER through the agent.
type Register struct {
	At      time.Duration
	Line    string
	Contact string // the Contact URI, e.g. "sip:+15551230001@192.0.2.10:5062"
	Expires int    // seconds; 0 removes the binding
	Source  string // ip:port it comes from
}

// Trace is one labelled sequence of calls: an agent-day of a human model,
// a stretch of a machine's dialing, or one scenario.
type Trace struct {
	Model string `json:"model"`
	Class Class  `json:"class"`
	// Lines are the device's Leadport lines during the trace.
	Lines []string `json:"lines"`
	// Calls in order of Start.
	Calls     []Call     `json:"calls,omitempty"`
	Registers []Register `json:"registers,omitempty"`
	// Rule is the rule expected to catch the trace (Machine, Forwarding,
	// Trunking); empty for Human and Honest.
	Rule string `json:"rule,omitempty"`
}

// The JSON form of traces (golden cases) writes durations as Go duration
// strings ("1m30s"), which a person can read and check.

type jsonCall struct {
	Start          string           `json:"start"`
	Direction      detect.Direction `json:"direction"`
	Line           string           `json:"line,omitempty"`
	Remote         string           `json:"remote,omitempty"`
	From           string           `json:"from,omitempty"`
	PAI            string           `json:"pai,omitempty"`
	RPID           string           `json:"rpid,omitempty"`
	Diversion      []string         `json:"diversion,omitempty"`
	HistoryInfo    []string         `json:"history_info,omitempty"`
	Source         string           `json:"source,omitempty"`
	Ring           string           `json:"ring"`
	Status         int              `json:"status"`
	Early          int              `json:"early,omitempty"`
	EarlyDiversion bool             `json:"early_diversion,omitempty"`
	Talk           string           `json:"talk,omitempty"`
	ReferAfter     string           `json:"refer_after,omitempty"`
	Bye            Party            `json:"bye,omitempty"`
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func parseDur(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// MarshalJSON writes the call with readable durations.
func (c Call) MarshalJSON() ([]byte, error) {
	start := c.Start.String()
	return json.Marshal(jsonCall{
		Start: start, Direction: c.Direction, Line: c.Line, Remote: c.Remote, From: c.From, PAI: c.PAI,
		RPID: c.RPID, Diversion: c.Diversion, HistoryInfo: c.HistoryInfo, Source: c.Source,
		Ring: c.Ring.String(), Status: c.Status, Early: c.Early, EarlyDiversion: c.EarlyDiversion,
		Talk: durString(c.Talk), ReferAfter: durString(c.ReferAfter), Bye: c.Bye,
	})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *Call) UnmarshalJSON(b []byte) error {
	var j jsonCall
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = Call{Direction: j.Direction, Line: j.Line, Remote: j.Remote, From: j.From, PAI: j.PAI, RPID: j.RPID,
		Diversion: j.Diversion, HistoryInfo: j.HistoryInfo, Source: j.Source, Status: j.Status,
		Early: j.Early, EarlyDiversion: j.EarlyDiversion, Bye: j.Bye}
	var err error
	for _, f := range []struct {
		dst *time.Duration
		s   string
	}{{&c.Start, j.Start}, {&c.Ring, j.Ring}, {&c.Talk, j.Talk}, {&c.ReferAfter, j.ReferAfter}} {
		if *f.dst, err = parseDur(f.s); err != nil {
			return fmt.Errorf("call at %s: %w", j.Start, err)
		}
	}
	return nil
}

type jsonRegister struct {
	At      string `json:"at"`
	Line    string `json:"line"`
	Contact string `json:"contact"`
	Expires int    `json:"expires"`
	Source  string `json:"source,omitempty"`
}

// MarshalJSON writes the register with a readable time.
func (g Register) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonRegister{At: g.At.String(), Line: g.Line, Contact: g.Contact, Expires: g.Expires, Source: g.Source})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (g *Register) UnmarshalJSON(b []byte) error {
	var j jsonRegister
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	at, err := parseDur(j.At)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	*g = Register{At: at, Line: j.Line, Contact: j.Contact, Expires: j.Expires, Source: j.Source}
	return nil
}
