package detect

import (
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Direction says which side a call or request came from.
type Direction uint8

const (
	// Outbound: from the local side (PBX, phones) toward the Leadport edge.
	Outbound Direction = iota + 1
	// Inbound: from the Leadport edge toward the local side.
	Inbound
)

func (d Direction) String() string {
	switch d {
	case Outbound:
		return "outbound"
	case Inbound:
		return "inbound"
	}
	return "unknown"
}

// Event is what a SIP source shows the decision function: a request that
// starts or changes something (initial INVITE, re-INVITE, REFER, REGISTER,
// SUBSCRIBE, MESSAGE), or a response from the local side.
type Event struct {
	At        time.Time
	Direction Direction // of the request, also for a response to it
	// Line is the device's Leadport line the message belongs to (E.164),
	// empty for traffic of other numbers.
	Line string
	// Remote is the other party, E.164 where it could be normalised, else
	// the raw user part. Personal: never log it whole.
	Remote string
	// InDialog is set for requests with a To tag.
	InDialog bool
	Request  *sip.Request
	// Response is set when the event is a response from the local side;
	// Request is then the request it answers. Treat both as read-only.
	Response *sip.Response
}

// Verdict is the decision on one event.
type Verdict struct {
	// Block answers the request (or replaces the response) with Status and
	// a Warning naming Rule instead of relaying it.
	Block  bool
	Status int
	Rule   string // rule id, e.g. "forwarding.redirect"
	Reason string // reason phrase; the status text when empty
	// Observed names the rules that tripped but only observe: the request
	// goes through, and the call's Identity says so.
	Observed []string
}

// Allow is the verdict that lets a message through.
var Allow = Verdict{}

// Decider decides on each event. It must be quick and must not block: it
// runs on the signalling path. A panic inside it lets the message through
// and is counted.
type Decider interface {
	Decide(ev *Event) Verdict
}

// DeciderFunc adapts a function to Decider.
type DeciderFunc func(ev *Event) Verdict

func (f DeciderFunc) Decide(ev *Event) Verdict { return f(ev) }

// CallSigner vouches to the Leadport edge for the calls the agent lets out
// (an RFC 8224 Identity header that the edge verifies with the device's
// enrolled key), so that a call that did not pass the rules is refused
// there. The agent provides it; the proxy calls it on the signalling path,
// so it must be quick.
type CallSigner interface {
	// SignCall adds the Identity header (and a Date header when there is
	// none) to an outbound dialog-creating INVITE on line that the rules
	// let through with v. On error the request goes out unsigned.
	SignCall(req *sip.Request, line string, v Verdict) error
	// UpstreamDate hands over the Date header of a response from the
	// upstream and when it arrived: the signer corrects its clock by it,
	// since verifiers refuse tokens more than a minute off their own.
	UpstreamDate(date string, received time.Time)
}

// AllowAll lets everything through: the decision the proxy ships with until
// rules are configured.
var AllowAll Decider = DeciderFunc(func(*Event) Verdict { return Allow })

// MarshalText writes the direction as "outbound" or "inbound".
func (d Direction) MarshalText() ([]byte, error) {
	if d != Outbound && d != Inbound {
		return nil, fmt.Errorf("direction %d is neither outbound nor inbound", d)
	}
	return []byte(d.String()), nil
}

// UnmarshalText reads "outbound" or "inbound".
func (d *Direction) UnmarshalText(b []byte) error {
	switch string(b) {
	case "outbound":
		*d = Outbound
	case "inbound":
		*d = Inbound
	default:
		return fmt.Errorf("direction %q is neither outbound nor inbound", b)
	}
	return nil
}
