// Package dialog tracks the calls on the device's lines from first INVITE to
// BYE, failure or expiry, and reports each call once when it ends, with
// what a usage record needs.
//
// The tracker is fed by a SIP source and takes every time from its caller,
// so tests and replays run in simulated time. It holds no SIP messages, only
// a few strings and times per call, and a bounded number of calls.
package dialog

import (
	"sort"
	"sync"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

// State of a call, as RFC 3261 dialogs go.
type State uint8

const (
	Attempt    State = iota + 1 // INVITE sent, nothing back beyond 100
	Early                       // a provisional response with a tag
	Confirmed                   // answered
	Terminated                  // ended; reported
)

func (s State) String() string {
	switch s {
	case Attempt:
		return "attempt"
	case Early:
		return "early"
	case Confirmed:
		return "confirmed"
	case Terminated:
		return "terminated"
	}
	return "unknown"
}

// Disposition is how a call ended, as the usage record says it.
type Disposition string

const (
	Answered  Disposition = "answered"
	Busy      Disposition = "busy"
	NoAnswer  Disposition = "no_answer"
	Cancelled Disposition = "cancelled"
	Failed    Disposition = "failed"
	Blocked   Disposition = "blocked"
)

// DispositionOf maps the final status of an unanswered call.
func DispositionOf(status int) Disposition {
	switch {
	case status >= 200 && status < 300:
		return Answered
	case status == 486 || status == 600:
		return Busy
	case status == 408 || status == 480:
		return NoAnswer
	case status == 487:
		return Cancelled
	}
	return Failed
}

// Call is one tracked call (the dialogs of one INVITE, forks included).
type Call struct {
	CallID    string
	Line      string
	Direction detect.Direction
	Remote    string // personal
	State     State

	StartedAt   time.Time // the initial INVITE
	AnsweredAt  time.Time // the first 2xx
	EndedAt     time.Time // BYE, final failure, or expiry
	FinalStatus int
	Disposition Disposition
	BlockedBy   string
	// CancelledAt is when the caller's CANCEL passed, for a call given up
	// while ringing: how long a caller lets a call ring is one of the
	// pacing rule's signs of a machine.
	CancelledAt time.Time
	// Expired is set when the call ended by timeout (longest call or a
	// lapsed session timer) rather than a BYE.
	Expired bool
	// EndedBy is the party whose BYE ended the call; empty when the BYE's
	// sender is not known (Bye) or no BYE ended it. Who hangs up, and how
	// soon after the answer, is one of the pacing rule's signs of a
	// dialer's answering-machine detection.
	EndedBy Party
	// Hairpin marks the second leg of a call that passes the agent twice
	// with one Call-ID: from one of the device's lines out to the edge and
	// back in to another of its lines. Each leg is a call on its own line,
	// with its own usage record; the tracker keys this one by LegKey.
	Hairpin bool
	// CallerTag is the From tag of the initial INVITE: an in-dialog
	// request with it in From comes from the caller (RFC 3261 12.2.1.1),
	// whichever way it reaches the agent.
	CallerTag string

	lastRefresh    time.Time
	sessionExpires time.Duration
	cancelled      bool
	// challengedAt is set while the call's INVITE was answered 401 or 407
	// and its retry with credentials is awaited (challengeWait).
	challengedAt time.Time
}

// challengeWait is how long a call whose INVITE was challenged (401, 407)
// waits for the INVITE re-sent with credentials (same Call-ID, RFC 3261
// 22.2) before it ends as failed. User agents re-send at once; a
// challenge they cannot answer ends the call then.
const challengeWait = 32 * time.Second

// Key is the call's key in the tracker: its Call-ID, or for the second
// leg of a hairpin call LegKey(CallID, true).
func (c *Call) Key() string { return LegKey(c.CallID, c.Hairpin) }

// LegKey is the tracker's key for a leg of a call: the Call-ID for the
// first (or only) pass through the agent, the Call-ID with a suffix no
// Call-ID can carry (a NUL) for the second leg of a hairpin call.
func LegKey(callID string, hairpin bool) string {
	if !hairpin {
		return callID
	}
	return callID + "\x00hairpin"
}

// Duration is the answered time, the figure billing uses.
func (c *Call) Duration() time.Duration {
	if c.AnsweredAt.IsZero() || c.EndedAt.Before(c.AnsweredAt) {
		return 0
	}
	return c.EndedAt.Sub(c.AnsweredAt)
}

// Options configure a Tracker.
type Options struct {
	// MaxCalls bounds the calls held; calls past it go untracked and are
	// counted. Default 20,000 (about 5 MB).
	MaxCalls int
	// MaxDuration ends a confirmed call with no BYE after this long.
	// Default 4 h.
	MaxDuration time.Duration
	// SetupTimeout ends a call that never got a final response (a lost
	// transaction). Default 5 minutes.
	SetupTimeout time.Duration
	// OnEnd receives each call once, when it ends, outside the tracker's
	// lock. It must not block: it runs on the signalling path.
	OnEnd func(Call)
	// OnAnswer receives each call once, at its first 2xx, the same way.
	OnAnswer func(Call)
}

// Stats are the tracker's counters.
type Stats struct {
	Active   int    // calls held now
	Total    uint64 // calls begun since start
	Ended    uint64
	Expired  uint64 // of Ended, by timeout
	Overflow uint64 // calls not tracked because MaxCalls was reached
}

// Tracker holds the calls in progress, keyed by Call-ID (Call.Key). The
// methods that take a key take the Call-ID, or LegKey for a hairpin's
// second leg.
type Tracker struct {
	opts  Options
	mu    sync.Mutex
	calls map[string]*Call
	stats Stats
	// woken is closed at the next call taken while the tracker was
	// empty; nil until Idle asks for it.
	woken chan struct{}
}

// New returns an empty tracker.
func New(opts Options) *Tracker {
	if opts.MaxCalls <= 0 {
		opts.MaxCalls = 20_000
	}
	if opts.MaxDuration <= 0 {
		opts.MaxDuration = 4 * time.Hour
	}
	if opts.SetupTimeout <= 0 {
		opts.SetupTimeout = 5 * time.Minute
	}
	return &Tracker{opts: opts, calls: make(map[string]*Call)}
}

// Begin starts tracking a call at its initial INVITE. It returns false when
// the call is already tracked (a retransmission or a second branch) or the
// tracker is full.
//
// An INVITE with the Call-ID of a call whose INVITE was challenged (401,
// 407) is that call's retry with credentials: the call goes on, one call
// with one usage record, and Begin returns true.
func (t *Tracker) Begin(c Call) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if held, ok := t.calls[c.Key()]; ok {
		if held.challengedAt.IsZero() {
			return false
		}
		held.challengedAt = time.Time{}
		held.State, held.FinalStatus, held.Disposition = Attempt, 0, ""
		return true
	}
	if len(t.calls) >= t.opts.MaxCalls {
		t.stats.Overflow++
		return false
	}
	c.State = Attempt
	c.lastRefresh = c.StartedAt
	t.calls[c.Key()] = &c
	t.stats.Total++
	t.wakeLocked()
	return true
}

// Idle returns, when the tracker holds no call, a channel closed once it
// takes one (Begin, Restore); nil while it holds calls. Periodic work on the
// calls in progress (the checkpoint) stops while there are none, so an
// agent without calls is not woken for nothing; the check and the channel
// are one step, so a call that comes meanwhile is never missed.
func (t *Tracker) Idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.calls) > 0 {
		return nil
	}
	if t.woken == nil {
		t.woken = make(chan struct{})
	}
	return t.woken
}

func (t *Tracker) wakeLocked() {
	if t.woken != nil {
		close(t.woken)
		t.woken = nil
	}
}

// Response records a response to the initial INVITE. sessionExpires is the
// Session-Expires of a 2xx (RFC 4028), zero when absent.
func (t *Tracker) Response(key string, status int, at time.Time, sessionExpires time.Duration) {
	var ended *Call
	var answered Call
	t.mu.Lock()
	c := t.calls[key]
	switch {
	case c == nil || c.State == Terminated:
	case status < 200:
		if status > 100 && c.State == Attempt {
			c.State = Early
		}
	case status < 300:
		if c.State != Confirmed {
			c.State = Confirmed
			c.AnsweredAt = at
			c.FinalStatus = status
			c.Disposition = Answered
			answered = *c
		}
		c.lastRefresh = at
		c.sessionExpires = sessionExpires
	case (status == 401 || status == 407) && c.State != Confirmed && !c.cancelled:
		// Challenged: the call goes on if the caller re-sends with
		// credentials (Begin); Expire ends it if not.
		c.FinalStatus = status
		c.challengedAt = at
	default:
		if c.State == Confirmed {
			break // another fork's failure after one answered
		}
		c.FinalStatus = status
		c.Disposition = DispositionOf(status)
		if c.cancelled {
			c.Disposition = Cancelled
		}
		ended = t.endLocked(c, at)
	}
	t.mu.Unlock()
	if answered.CallID != "" && t.opts.OnAnswer != nil {
		t.opts.OnAnswer(answered)
	}
	t.report(ended)
}

// Cancel notes a CANCEL for the call at `at`; the 487 that follows ends it
// as cancelled.
func (t *Tracker) Cancel(key string, at time.Time) {
	t.mu.Lock()
	if c := t.calls[key]; c != nil && !c.cancelled {
		c.cancelled = true
		c.CancelledAt = at
	}
	t.mu.Unlock()
}

// Block ends a call the decision function refused.
func (t *Tracker) Block(key, rule string, status int, at time.Time) {
	var ended *Call
	t.mu.Lock()
	if c := t.calls[key]; c != nil && c.State != Confirmed && c.State != Terminated {
		c.FinalStatus = status
		c.Disposition = Blocked
		c.BlockedBy = rule
		ended = t.endLocked(c, at)
	}
	t.mu.Unlock()
	t.report(ended)
}

// Fail ends a call whose INVITE got no final response: the transaction
// timed out or the next hop could not be reached.
func (t *Tracker) Fail(key string, status int, at time.Time) {
	var ended *Call
	t.mu.Lock()
	if c := t.calls[key]; c != nil && c.State != Confirmed && c.State != Terminated {
		c.FinalStatus = status
		c.Disposition = Failed
		if c.cancelled {
			c.Disposition = Cancelled
		}
		ended = t.endLocked(c, at)
	}
	t.mu.Unlock()
	t.report(ended)
}

// Party is one end of a call.
type Party string

// The parties of a call.
const (
	Caller Party = "caller" // the side that sent the initial INVITE
	Callee Party = "callee"
)

// Bye ends a call by a BYE from a side the source did not tell.
func (t *Tracker) Bye(key string, at time.Time) { t.ByeFrom(key, at, "") }

// ByeFrom ends a call by a BYE that `from` sent (empty: not known).
func (t *Tracker) ByeFrom(key string, at time.Time, from Party) { t.bye(key, at, from, "") }

// ByeTagged ends a call by a BYE whose From carries tag: the caller sent
// it when that is the initial INVITE's tag (CallerTag), else the callee;
// not known when the INVITE had none. The proxy's way: one lookup, under
// the lock that ends the call.
func (t *Tracker) ByeTagged(key string, at time.Time, tag string) { t.bye(key, at, "", tag) }

func (t *Tracker) bye(key string, at time.Time, from Party, tag string) {
	var ended *Call
	t.mu.Lock()
	if c := t.calls[key]; c != nil && c.State != Terminated {
		if c.State != Confirmed {
			// BYE on an early dialog (RFC 3261 15): the caller gave up.
			c.Disposition = Cancelled
		}
		if from == "" && c.CallerTag != "" {
			from = Callee
			if tag == c.CallerTag {
				from = Caller
			}
		}
		c.EndedBy = from
		ended = t.endLocked(c, at)
	}
	t.mu.Unlock()
	t.report(ended)
}

// Refresh notes a successful in-dialog refresh (re-INVITE or UPDATE 2xx),
// which restarts its session timer.
func (t *Tracker) Refresh(key string, at time.Time, sessionExpires time.Duration) {
	t.mu.Lock()
	if c := t.calls[key]; c != nil && c.State == Confirmed {
		c.lastRefresh = at
		if sessionExpires > 0 {
			c.sessionExpires = sessionExpires
		}
	}
	t.mu.Unlock()
}

// Get returns a copy of a tracked call.
func (t *Tracker) Get(key string) (Call, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.calls[key]; c != nil {
		return *c, true
	}
	return Call{}, false
}

// Expire ends the calls that outlived their limits at now: confirmed calls
// past the longest call or a lapsed session timer, and setups that never
// got a final response. It returns how many it ended.
func (t *Tracker) Expire(now time.Time) int {
	var ended []*Call
	t.mu.Lock()
	for _, c := range t.calls {
		switch c.State {
		case Confirmed:
			// RFC 4028 10: the session ends at Session-Expires with no
			// refresh; allow the refresher its last-third margin plus a
			// little for the BYE that usually follows.
			if c.sessionExpires > 0 && now.Sub(c.lastRefresh) > c.sessionExpires+32*time.Second {
				c.Expired = true
				ended = append(ended, t.endLocked(c, c.lastRefresh.Add(c.sessionExpires)))
			} else if now.Sub(c.AnsweredAt) > t.opts.MaxDuration {
				c.Expired = true
				ended = append(ended, t.endLocked(c, c.AnsweredAt.Add(t.opts.MaxDuration)))
			}
		case Attempt, Early:
			if !c.challengedAt.IsZero() && now.Sub(c.challengedAt) > challengeWait {
				c.Disposition = DispositionOf(c.FinalStatus)
				ended = append(ended, t.endLocked(c, c.challengedAt))
			} else if now.Sub(c.StartedAt) > t.opts.SetupTimeout {
				c.Expired = true
				c.FinalStatus = 408
				c.Disposition = Failed
				ended = append(ended, t.endLocked(c, now))
			}
		}
	}
	t.mu.Unlock()
	for _, c := range ended {
		t.report(c)
	}
	return len(ended)
}

func (t *Tracker) endLocked(c *Call, at time.Time) *Call {
	c.State = Terminated
	c.EndedAt = at
	if c.Disposition == "" {
		c.Disposition = Answered
	}
	delete(t.calls, c.Key())
	t.stats.Ended++
	if c.Expired {
		t.stats.Expired++
	}
	return c
}

func (t *Tracker) report(c *Call) {
	if c != nil && t.opts.OnEnd != nil {
		t.opts.OnEnd(*c)
	}
}

// Active returns copies of the calls in progress, oldest first.
func (t *Tracker) Active() []Call {
	t.mu.Lock()
	out := make([]Call, 0, len(t.calls))
	for _, c := range t.calls {
		out = append(out, *c)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out
}

// Stats returns the counters.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Active = len(t.calls)
	return s
}

// Saved is a call in progress as kept across a restart of the agent: the
// calls' dialogs outlive the process (their requests route by Record-Route
// to the same address), so the BYE that comes after the restart must still
// find its call and meter it. The other party is not kept: it is personal
// data, and the snapshot is not sealed.
type Saved struct {
	CallID         string           `json:"call_id"`
	Line           string           `json:"line"`
	Direction      detect.Direction `json:"direction"`
	State          State            `json:"state"`
	StartedAt      time.Time        `json:"started_at"`
	AnsweredAt     time.Time        `json:"answered_at,omitzero"`
	LastRefresh    time.Time        `json:"last_refresh,omitzero"`
	SessionExpires time.Duration    `json:"session_expires,omitempty"`
	Cancelled      bool             `json:"cancelled,omitempty"`
	CancelledAt    time.Time        `json:"cancelled_at,omitzero"`
	Hairpin        bool             `json:"hairpin,omitempty"`
	CallerTag      string           `json:"caller_tag,omitempty"`
}

// Snapshot returns the calls in progress, for keeping across a restart.
func (t *Tracker) Snapshot() []Saved {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Saved, 0, len(t.calls))
	for _, c := range t.calls {
		out = append(out, Saved{CallID: c.CallID, Line: c.Line, Direction: c.Direction, State: c.State,
			StartedAt: c.StartedAt, AnsweredAt: c.AnsweredAt, LastRefresh: c.lastRefresh,
			SessionExpires: c.sessionExpires, Cancelled: c.cancelled, CancelledAt: c.CancelledAt, Hairpin: c.Hairpin, CallerTag: c.CallerTag})
	}
	return out
}

// Restore takes back calls a Snapshot kept, as they were, and returns
// them as calls. A call already tracked, or past the bound, is skipped.
func (t *Tracker) Restore(saved []Saved) []Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Call
	for _, s := range saved {
		if s.CallID == "" || s.State == Terminated {
			continue
		}
		if _, ok := t.calls[LegKey(s.CallID, s.Hairpin)]; ok || len(t.calls) >= t.opts.MaxCalls {
			continue
		}
		c := &Call{CallID: s.CallID, Line: s.Line, Direction: s.Direction, State: s.State,
			StartedAt: s.StartedAt, AnsweredAt: s.AnsweredAt, lastRefresh: s.LastRefresh,
			sessionExpires: s.SessionExpires, cancelled: s.Cancelled, CancelledAt: s.CancelledAt, Hairpin: s.Hairpin, CallerTag: s.CallerTag}
		if c.lastRefresh.IsZero() {
			c.lastRefresh = c.StartedAt
		}
		t.calls[c.Key()] = c
		t.stats.Total++
		out = append(out, *c)
	}
	if len(out) > 0 {
		t.wakeLocked()
	}
	return out
}
