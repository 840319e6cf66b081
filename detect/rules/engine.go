// Package rules decides what the terms forbid on the device's lines:
// forwarding, trunking, machine-paced dialing, caller-ID misuse and minutes
// over the plan. The Engine is the proxy's decision function.
//
// It is pure: SIP events and their times in, verdicts and violations out,
// no I/O and no clock of its own. The proxy, the tests, the golden cases
// and `make eval` run the same code, the latter two in simulated time.
package rules

import (
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
)

// Action is what a rule's trip did to the request (the violation record's
// action, docs/protocol.md).
type Action string

// The actions of a violation.
const (
	ActionBlocked  Action = "blocked"  // the request was refused
	ActionObserved Action = "observed" // the rule only observes: it went through
)

// Confidence says how sure a violation is (the record's confidence).
type Confidence string

// The confidences of a violation.
const (
	// Certain: the rule is sure. Only certain trips block.
	Certain Confidence = "certain"
	// Suspect: evidence of machine-paced dialing is building but is not
	// yet proof. The request goes through; the platform can look across
	// the customer's lines and act.
	Suspect Confidence = "suspect"
)

// Violation is a rule that tripped: blocked, or only observed.
type Violation struct {
	Rule       string
	Line       string
	Action     Action
	Confidence Confidence
	// Score, for a suspect report, is its figure against the signal's
	// block threshold: 0 to 1, 1 where it would block.
	Score  float64
	At     time.Time
	CallID string
	// Evidence holds the figures that tripped the rule and the thresholds
	// in force. It never holds phone numbers: those are in Numbers.
	Evidence map[string]any
	// Numbers are the other parties concerned (a forwarding target, the
	// callees of a dialing run). Personal data.
	Numbers []string
}

// Options configure an Engine.
type Options struct {
	// DefaultCountry normalises national numbers, as for the lines.
	DefaultCountry string
	// OnViolation receives every violation, after the decision and outside
	// the engine's lock. It must not block: it runs on the signalling
	// path.
	OnViolation func(Violation)
	// OnRuleError is told about a rule that failed (its violation of kind
	// agent.rule_error goes to OnViolation as well). Optional.
	OnRuleError func(rule string, err error)
	// SetupTimeout and MaxDuration bound how long a call the engine never
	// hears the end of is held, like the tracker's. Defaults 5 min, 4 h.
	SetupTimeout time.Duration
	MaxDuration  time.Duration
	// MaxSources bounds the registration sources remembered for the
	// caller-ID rule. Default 10,000.
	MaxSources int
}

// Stats count what the engine did since it started.
type Stats struct {
	Decisions  uint64
	Blocked    map[string]uint64 // by rule
	Observed   map[string]uint64 // by rule
	Suspected  map[string]uint64 // by rule: suspect reports
	RuleErrors map[string]uint64 // by rule
	Lines      int               // lines with state held
	Calls      int               // calls held
}

// Engine holds the rules' state per line and decides on each event. It is
// safe for concurrent use; a decision takes one short lock.
type Engine struct {
	opts Options

	mu      sync.Mutex
	pol     *policy.Policy
	lines   *detect.Lines
	codes   []string // feature codes, longest first
	state   map[string]*lineState
	inbound map[string]int      // remote -> live inbound calls on lines (bridging by caller ID)
	sources map[string]*srcRegs // REGISTER source -> identities registered from it
	stats   Stats
	// panicIn makes a rule panic, for the tests of rule failure.
	panicIn string
}

// New returns an engine applying p. It fails when p is invalid.
func New(p policy.Policy, opts Options) (*Engine, error) {
	if opts.SetupTimeout <= 0 {
		opts.SetupTimeout = 5 * time.Minute
	}
	if opts.MaxDuration <= 0 {
		opts.MaxDuration = 4 * time.Hour
	}
	if opts.MaxSources <= 0 {
		opts.MaxSources = 10_000
	}
	e := &Engine{
		opts:    opts,
		state:   map[string]*lineState{},
		inbound: map[string]int{},
		sources: map[string]*srcRegs{},
		stats: Stats{
			Blocked: map[string]uint64{}, Observed: map[string]uint64{}, Suspected: map[string]uint64{}, RuleErrors: map[string]uint64{},
		},
	}
	if err := e.SetPolicy(p); err != nil {
		return nil, err
	}
	return e, nil
}

// SetPolicy swaps the policy. Calls in progress and each line's history
// stay; lines no longer in the policy lose their state.
func (e *Engine) SetPolicy(p policy.Policy) error {
	if probs := p.Problems(); len(probs) > 0 {
		return &policy.Error{Problems: probs}
	}
	lines, bad := detect.NewLines(p.Lines, e.opts.DefaultCountry)
	if len(bad) > 0 {
		return fmt.Errorf("policy lines: cannot read %s as phone numbers", strings.Join(bad, ", "))
	}
	codes := append([]string(nil), p.Forwarding.FeatureCodes...)
	sortLongestFirst(codes)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pol, e.lines, e.codes = &p, lines, codes
	for l, ls := range e.state {
		if _, ok := lines.Match(l); !ok {
			ls.dropCalls(e)
			delete(e.state, l)
		}
	}
	return nil
}

// Policy returns the policy in force.
func (e *Engine) Policy() policy.Policy {
	e.mu.Lock()
	defer e.mu.Unlock()
	return *e.pol
}

// Lines returns the lines of the policy in force, for the SIP source.
func (e *Engine) Lines() *detect.Lines {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lines
}

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Blocked, s.Observed, s.Suspected, s.RuleErrors = clone(s.Blocked), clone(s.Observed), clone(s.Suspected), clone(s.RuleErrors)
	s.Lines = len(e.state)
	for _, ls := range e.state {
		s.Calls += len(ls.calls)
	}
	return s
}

func clone(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// trip is one rule's finding on an event.
type trip struct {
	rule     string
	line     string // the line concerned; the event's when empty
	status   int    // SIP status for a block
	evidence map[string]any
	numbers  []string
	// quiet: a repeat that is blocked but not observed again (observe
	// mode inside a cool-down), so it writes no violation.
	quiet bool
	// suspect: evidence building, not proof; it never blocks.
	suspect bool
	score   float64
}

// blocks reports whether the trip refuses its request under p.
func (t *trip) blocks(p *policy.Policy) bool {
	return !t.suspect && t.rule != policy.RuleError && p.ActionOf(t.rule) == policy.Block
}

// decision gathers the trips of one event. Most events trip nothing, so
// it lives on the stack and allocates only when something trips (it must
// not point into itself, or escape analysis moves it to the heap).
type decision struct {
	ev    *detect.Event
	trips []trip
	// cooling: the attempt fell in a pacing cool-down; it does not count
	// toward the line's history, so a dialer hammering a blocked line does
	// not extend its own block.
	cooling bool
	// repeat: the line's newest attempt again (same Call-ID); it is not
	// counted twice.
	repeat bool
	// att is the attempt the pacing rule measured, which begin then
	// records (hasAtt: it did); next is what it makes of the line's
	// signal counters (hasNext: measured).
	att     attempt
	hasAtt  bool
	next    sigNext
	hasNext bool
	fig     sigFigures
}

func (d *decision) add(t trip) { d.trips = append(d.trips, t) }

// Decide implements detect.Decider.
func (e *Engine) Decide(ev *detect.Event) detect.Verdict {
	d := decision{ev: ev}
	var out []Violation
	var v detect.Verdict
	e.mu.Lock()
	func() {
		defer e.mu.Unlock()
		e.stats.Decisions++
		e.dispatch(&d)
		v, out = e.conclude(&d)
	}()
	for _, viol := range out {
		if e.opts.OnViolation != nil {
			e.opts.OnViolation(viol)
		}
	}
	return v
}

// dispatch runs the rules that apply to the event, in order of
// precedence: the first blocking trip gives the verdict.
func (e *Engine) dispatch(d *decision) {
	ev := d.ev
	req := ev.Request
	if req == nil {
		return
	}
	if ev.Response != nil {
		if ev.Line != "" && ev.Direction == detect.Inbound && req.IsInvite() {
			e.run(d, policy.ForwardingRedirect, nil)
		}
		return
	}
	switch req.Method {
	case sip.INVITE:
		if ev.InDialog {
			return
		}
		e.invite(d)
	case sip.REFER:
		if ev.Line != "" {
			e.run(d, policy.ForwardingRefer, nil)
		}
	case sip.REGISTER:
		e.register(d)
	}
}

// invite decides on an initial INVITE.
func (e *Engine) invite(d *decision) {
	ev := d.ev
	var ls *lineState
	if ev.Line != "" {
		ls = e.line(ev.Line)
		ls.prune(e, ev.At)
	}
	if ev.Direction == detect.Outbound {
		e.run(d, policy.ForwardingFeatureCode, ls)
		e.run(d, policy.ForwardingDiversion, ls)
		e.run(d, policy.ForwardingBridge, ls)
		if ls != nil {
			e.run(d, policy.TrunkingConcurrent, ls)
			e.run(d, policy.Pacing, ls)
		}
		e.run(d, policy.CallerIDMismatch, ls)
	} else if ls != nil {
		e.run(d, policy.TrunkingConcurrent, ls)
	}
	if ls != nil {
		e.run(d, policy.QuotaMinutes, ls)
		e.begin(d, ls)
	}
}

// run evaluates one rule unless it is off. A rule that panics lets the
// event through; it is counted and reported as agent.rule_error.
func (e *Engine) run(d *decision, rule string, ls *lineState) {
	if e.pol.ActionOf(rule) == policy.Off {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			e.ruleFailed(d, rule, fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
		}
	}()
	if e.panicIn == rule {
		panic("injected by a test")
	}
	// A switch rather than a func value: an indirect call would make the
	// decision escape to the heap, and the allow path must not allocate.
	switch rule {
	case policy.ForwardingRedirect:
		e.redirect(d, ls)
	case policy.ForwardingRefer:
		e.refer(d, ls)
	case policy.ForwardingFeatureCode:
		e.featureCode(d, ls)
	case policy.ForwardingDiversion:
		e.diversion(d, ls)
	case policy.ForwardingBridge:
		e.bridge(d, ls)
	case policy.TrunkingConcurrent:
		e.concurrent(d, ls)
	case policy.Pacing:
		e.pacing(d, ls)
	case policy.CallerIDMismatch:
		e.callerID(d, ls)
	case policy.QuotaMinutes:
		e.quota(d, ls)
	}
}

func (e *Engine) ruleFailed(d *decision, rule string, err error) {
	e.stats.RuleErrors[rule]++
	// Drop whatever the failed rule had found: its figures may be wrong.
	kept := d.trips[:0]
	for _, t := range d.trips {
		if t.rule != rule {
			kept = append(kept, t)
		}
	}
	d.trips = kept
	d.add(trip{rule: policy.RuleError, evidence: map[string]any{"rule": rule, "error": firstLine(err.Error())}})
	if e.opts.OnRuleError != nil {
		e.opts.OnRuleError(rule, err)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// conclude turns the trips into the verdict and the violations.
func (e *Engine) conclude(d *decision) (detect.Verdict, []Violation) {
	if len(d.trips) == 0 {
		return detect.Allow, nil
	}
	ev := d.ev
	v := detect.Allow
	for _, t := range d.trips {
		if t.blocks(e.pol) {
			v = detect.Verdict{Block: true, Status: t.status, Rule: t.rule}
			break
		}
	}
	if !v.Block {
		// Every rule that tripped only observes (or failed): the call goes
		// out, and its Identity names them. A suspect report is no
		// finding about this call, so it names nothing.
		for _, t := range d.trips {
			if !t.suspect && !slices.Contains(v.Observed, t.rule) {
				v.Observed = append(v.Observed, t.rule)
			}
		}
	}
	out := make([]Violation, 0, len(d.trips))
	for _, t := range d.trips {
		action, conf := ActionObserved, Certain
		switch {
		case t.suspect:
			conf = Suspect
			e.stats.Suspected[t.rule]++
		case t.blocks(e.pol) && v.Block:
			action = ActionBlocked
			e.stats.Blocked[t.rule]++
		case t.rule != policy.RuleError:
			e.stats.Observed[t.rule]++
		}
		if t.quiet && action == ActionObserved {
			continue
		}
		line := t.line
		if line == "" {
			line = ev.Line
		}
		out = append(out, Violation{
			Rule: t.rule, Line: line, Action: action, Confidence: conf, Score: t.score, At: ev.At,
			CallID: callID(ev.Request), Evidence: t.evidence, Numbers: t.numbers,
		})
	}
	return v, out
}

// histDepth is how many past attempts of a line the pacing rules read
// under the policy in force.
func (e *Engine) histDepth() int {
	p := &e.pol.Pacing
	return min(max(p.RecentAttempts, p.RegularOver+1, p.SameRingTimeouts, p.SequentialRun, p.ShortGaps+1, 2), policy.MaxHistory)
}

// line returns the state of a line, made on first use.
func (e *Engine) line(l string) *lineState {
	ls := e.state[l]
	if ls == nil {
		ls = &lineState{}
		e.state[l] = ls
	}
	return ls
}

// begin notes an initial INVITE on a line: an attempt in the pacing
// history, and a live call unless it was blocked.
func (e *Engine) begin(d *decision, ls *lineState) {
	ev := d.ev
	blocked := false
	for _, t := range d.trips {
		if t.blocks(e.pol) {
			blocked = true
			break
		}
	}
	if ev.Direction == detect.Outbound && !d.cooling && !d.repeat {
		a := d.att
		if !d.hasAtt {
			a = ls.candidate(ev.At, ev.Remote)
		}
		a.id = idOf(callID(ev.Request))
		if !d.hasNext {
			d.next = ls.sig.advance(&a, ls, &e.pol.Pacing)
		}
		ls.sig.commit(d.next)
		ls.noteAttempt(a, e.histDepth())
	}
	if blocked {
		return
	}
	id := callID(ev.Request)
	if ls.find(id) >= 0 {
		return // a second branch of a call already held
	}
	ls.calls = append(ls.calls, liveCall{id: id, dir: ev.Direction, remote: ev.Remote, start: nanos(ev.At)})
	if ev.Direction == detect.Inbound && ev.Remote != "" {
		e.inbound[ev.Remote]++
	}
}

// CallAnswered tells the engine a call got its first 2xx. The tracker's
// OnAnswer calls it.
func (e *Engine) CallAnswered(c dialog.Call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ls := e.state[c.Line]; ls != nil {
		if i := ls.find(c.CallID); i >= 0 && !ls.calls[i].isAnswered() {
			ls.calls[i].answered = nanos(c.AnsweredAt)
		}
	}
}

// CallResumed tells the engine of a call that was in progress when the
// agent restarted, so that it counts as live (trunking, bridging).
func (e *Engine) CallResumed(c dialog.Call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.lines.Match(c.Line); !ok {
		return
	}
	ls := e.line(c.Line)
	if ls.find(c.CallID) >= 0 {
		return
	}
	ls.calls = append(ls.calls, liveCall{id: c.CallID, dir: c.Direction, remote: c.Remote, start: nanos(c.StartedAt), answered: nanos(c.AnsweredAt)})
}

// CallEnded tells the engine a call ended, however it ended. The
// tracker's OnEnd calls it.
func (e *Engine) CallEnded(c dialog.Call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ls := e.state[c.Line]
	if ls == nil {
		// A call the engine did not see begin (it began before a restart
		// or a policy swap) still counts its minutes.
		if _, ok := e.lines.Match(c.Line); !ok {
			return
		}
		ls = e.line(c.Line)
	}
	if i := ls.find(c.CallID); i >= 0 {
		ls.remove(e, i)
	}
	if end := nanos(c.EndedAt); c.Direction == detect.Outbound && c.Disposition != dialog.Blocked && end > ls.lastOutEnd {
		ls.lastOutEnd = end
	}
	ls.sig.ended(&c, &e.pol.Pacing)
	if c.Direction == detect.Outbound && !c.CancelledAt.IsZero() && c.AnsweredAt.IsZero() {
		id := idOf(c.CallID)
		for i := 0; i < ls.histLen(); i++ {
			if a := ls.recent(i); a.id == id {
				a.ringMS = millis(c.CancelledAt.Sub(c.StartedAt))
				break
			}
		}
	}
	if d := c.Duration(); d > 0 {
		ls.addMinutes(c.AnsweredAt, d)
	}
}

func callID(req *sip.Request) string {
	if req == nil {
		return ""
	}
	if h := req.CallID(); h != nil {
		return h.Value()
	}
	return ""
}
