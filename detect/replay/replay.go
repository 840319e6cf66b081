package replay

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
)

// Epoch is when traces start by default: a Monday morning, UTC.
var Epoch = time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)

// Addresses the replay gives requests without a Source of their own.
const (
	LocalSource    = "192.0.2.10:5060"   // the PBX or phone
	UpstreamSource = "198.51.100.1:5060" // the Leadport edge
)

// Block is one request or response the rules refused.
type Block struct {
	At   time.Duration
	Kind string // "invite", "response", "refer", "register"
	// Index is the call's (or register's) index in the trace; Attempt is
	// the call's number among the trace's outbound attempts, from 1 (0
	// for other kinds).
	Index   int
	Attempt int
	Rule    string
	Status  int
}

// Trip is a rule that tripped during the replay.
type Trip struct {
	Rule string
	// Action is the violation's action (blocked, observed), or
	// TripSuspect for a suspect report (which never blocks).
	Action  string
	Index   int // call or register index
	Attempt int // outbound attempts so far, this one included
}

// TripSuspect is the Action of a Trip that is a suspect report.
const TripSuspect = "suspect"

// TripOf is the Trip of a violation reported at the call or register of
// the given index, after attempt outbound attempts: its action, or
// TripSuspect for a suspect report. Every replay path builds its trips
// here, so that they agree.
func TripOf(v rules.Violation, index, attempt int) Trip {
	action := string(v.Action)
	if v.Confidence == rules.Suspect {
		action = TripSuspect
	}
	return Trip{Rule: v.Rule, Action: action, Index: index, Attempt: attempt}
}

// Result is what the rules made of a trace.
type Result struct {
	Blocks     []Block
	Violations []rules.Violation
	// Trips are the violations with where in the trace they happened.
	Trips []Trip
	// Attempts is the number of outbound attempts replayed.
	Attempts int
}

// First returns the first block, if any.
func (r *Result) First() (Block, bool) {
	if len(r.Blocks) == 0 {
		return Block{}, false
	}
	return r.Blocks[0], true
}

// Options tune a replay.
type Options struct {
	// Start is the wall time of the trace's offset 0; default Epoch.
	Start time.Time
	// StopAtFirstBlock ends the replay at the first block: the evaluation
	// only needs the first, and a person's day after a false block is
	// not what the model describes anyway.
	StopAtFirstBlock bool
	DefaultCountry   string
}

// Run replays a trace through a fresh engine and tracker with the policy.
// The policy's lines are the trace's when it names none.
func Run(tr *Trace, pol policy.Policy, opts Options) (*Result, error) {
	if len(pol.Lines) == 0 {
		pol.Lines = tr.Lines
	}
	res := &Result{}
	i := 0
	next := func() (Call, error) {
		if i == len(tr.Calls) {
			return Call{}, io.EOF
		}
		i++
		return tr.Calls[i-1], nil
	}
	err := replay(next, tr.Registers, pol, opts, runHooks{
		violation: func(v rules.Violation, t Trip, _ *callState) {
			res.Violations = append(res.Violations, v)
			res.Trips = append(res.Trips, t)
		},
		block: func(b Block, _ *callState) { res.Blocks = append(res.Blocks, b) },
	}, &res.Attempts)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// runHooks is what a replay reports, as it happens: a Result gathers it
// all (Run), a stream of a large trace file folds it into each call's
// row and each line's report (StreamTrace).
type runHooks struct {
	// violation: a violation and its trip; call is the call it concerns
	// (its Call-ID is the call's), nil for one that concerns none.
	violation func(v rules.Violation, t Trip, call *callState)
	// block: a request or response refused; call is nil for a REGISTER.
	block func(b Block, call *callState)
	// begin: a call is scheduled, in the order of the trace.
	begin func(call *callState)
	// done: a call's last step is over. Calls are done in the order of
	// the trace, each after every call before it.
	done func(call *callState)
}

// replay runs the calls next hands out (in order of start; io.EOF after
// the last) and the registers through a fresh engine and tracker. The
// calls are read only as far as the simulated clock needs them, and a
// call's state is let go when it is done, so a long trace costs the
// memory of the calls in flight, not of the trace.
func replay(next func() (Call, error), regs []Register, pol policy.Policy, opts Options, hooks runHooks, attempts *int) error {
	if opts.Start.IsZero() {
		opts.Start = Epoch
	}
	var onViolation func(rules.Violation)
	eng, err := rules.New(pol, rules.Options{
		DefaultCountry: opts.DefaultCountry,
		OnViolation:    func(v rules.Violation) { onViolation(v) },
	})
	if err != nil {
		return err
	}
	r := &runner{next: next, regs: regs, eng: eng, hooks: hooks, opts: opts, lines: eng.Lines()}
	onViolation = func(v rules.Violation) {
		var cs *callState
		if r.curCall && v.CallID == callIDOf(r.cur) {
			cs = r.state(r.cur)
		}
		if hooks.violation != nil {
			hooks.violation(v, TripOf(v, r.cur, r.attempts), cs)
		}
	}
	r.tracker = dialog.New(dialog.Options{OnEnd: eng.CallEnded, OnAnswer: eng.CallAnswered})
	r.schedule()
	err = r.loop()
	if attempts != nil {
		*attempts = r.attempts
	}
	return err
}

type step struct {
	at time.Duration
	// ord orders steps at the same time: the calls' in the order of the
	// trace, each call's in the order of its kinds, then registers, then
	// the expiry. It is the order a replay that pushed every step up
	// front, in that order, used to get from a sequence number; the
	// results must not change with how far ahead the calls are read.
	ord  uint64
	kind stepKind
	call int // index of the call in the trace, or in its Registers for register steps
}

type stepKind uint8

const (
	stInvite stepKind = iota
	stEarly
	stFinal
	stRefer
	stBye
	stRegister
	stExpire
)

const (
	ordRegister = 1 << 62
	ordExpire   = 2 << 62
)

// queue is a heap of steps by (at, ord), written out rather than through
// container/heap, whose interface boxes every step pushed.
type queue []step

func (q queue) less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].ord < q[j].ord
}

func (q *queue) push(s step) {
	*q = append(*q, s)
	h := *q
	for i := len(h) - 1; i > 0; {
		up := (i - 1) / 2
		if !h.less(i, up) {
			break
		}
		h[i], h[up] = h[up], h[i]
		i = up
	}
}

func (q *queue) pop() step {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && h.less(l, m) {
			m = l
		}
		if r < last && h.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}

type runner struct {
	next    func() (Call, error)
	regs    []Register
	eng     *rules.Engine
	tracker *dialog.Tracker
	lines   *detect.Lines
	hooks   runHooks
	opts    Options
	q       queue
	stopped bool

	// peek is the next call to schedule, read ahead of the clock (hasPeek).
	peek    Call
	hasPeek bool
	loaded  int           // calls scheduled so far
	last    time.Duration // the latest step scheduled, for the expiry
	// live holds the state of calls base, base+1, ... that are scheduled
	// and not yet done (and of those done after a call still going:
	// hooks.done keeps the order of the trace): n of them from live[head],
	// a ring whose size is a power of two, so that calls come and go
	// without being copied.
	live    []callState
	head, n int
	base    int

	readErr  error // from the source, ends the replay
	attempts int
	cur      int  // index of the call or register being decided
	curCall  bool // cur is a call
}

type callState struct {
	call    Call
	index   int
	req     *sip.Request
	line    string
	remote  string
	dir     detect.Direction
	attempt int
	done    bool // blocked or ended: later steps are skipped
	steps   int  // steps still queued
	// report is what the rules made of the call, for a stream's rows.
	report CallReport
}

func (r *runner) state(i int) *callState {
	return &r.live[(r.head+i-r.base)&(len(r.live)-1)]
}

// add makes room for the state of the next call and returns it.
func (r *runner) add() *callState {
	if r.n == len(r.live) {
		grown := make([]callState, max(64, 2*len(r.live)))
		for k := 0; k < r.n; k++ {
			grown[k] = r.live[(r.head+k)&(len(r.live)-1)]
		}
		r.live, r.head = grown, 0
	}
	r.n++
	return &r.live[(r.head+r.n-1)&(len(r.live)-1)]
}

func (r *runner) push(at time.Duration, kind stepKind, i int) {
	ord := uint64(i)<<3 | uint64(kind)
	switch kind {
	case stRegister:
		ord = ordRegister | uint64(i)
	case stExpire:
		ord = ordExpire
	default:
		r.state(i).steps++
	}
	r.q.push(step{at: at, ord: ord, kind: kind, call: i})
}

func (r *runner) schedule() {
	for i, g := range r.regs {
		r.push(g.At, stRegister, i)
		r.last = max(r.last, g.At)
	}
	// The tracker's expiry, as the proxy runs it, once a simulated
	// minute; each tick schedules the next (expire).
	r.push(time.Minute, stExpire, 0)
}

// read takes the next call from the source into peek.
func (r *runner) read() error {
	c, err := r.next()
	if err == io.EOF {
		r.hasPeek = false
		return nil
	}
	if err != nil {
		return err
	}
	r.peek, r.hasPeek = c, true
	return nil
}

// load schedules the calls that start by the next step: a call's steps
// all fall at or after its start, so the ones still unread cannot come
// first.
func (r *runner) load() {
	for r.hasPeek && (len(r.q) == 0 || r.peek.Start <= r.q[0].at) {
		i := r.loaded
		r.loaded++
		cs := r.add()
		cs.call, cs.index = r.peek, i
		c := &cs.call
		r.push(c.Start, stInvite, i)
		if c.Early != 0 && c.Ring > time.Second {
			r.push(c.Start+time.Second, stEarly, i)
		}
		r.push(c.Start+c.Ring, stFinal, i)
		if c.Status >= 200 && c.Status < 300 {
			if c.ReferAfter > 0 && c.ReferAfter < c.Talk {
				r.push(c.Start+c.Ring+c.ReferAfter, stRefer, i)
			}
			r.push(c.Start+c.Ring+c.Talk, stBye, i)
		}
		r.last = max(r.last, c.Start+c.Ring+c.Talk)
		if r.hooks.begin != nil {
			r.hooks.begin(r.state(i))
		}
		r.peek = Call{}
		if err := r.read(); err != nil {
			r.hasPeek = false
			r.readErr = err
			return
		}
	}
}

func (r *runner) loop() error {
	if err := r.read(); err != nil {
		return err
	}
	for !r.stopped {
		r.load()
		if r.readErr != nil {
			return r.readErr
		}
		if len(r.q) == 0 {
			break
		}
		s := r.q.pop()
		r.cur, r.curCall = s.call, s.kind != stRegister && s.kind != stExpire
		at := r.opts.Start.Add(s.at)
		switch s.kind {
		case stInvite:
			r.invite(s, at)
		case stEarly:
			r.early(s, at)
		case stFinal:
			r.final(s, at)
		case stRefer:
			r.refer(s, at)
		case stBye:
			if cs := r.state(s.call); !cs.done {
				cs.done = true
				// Who hangs up is a pacing signal, so the BYE comes from
				// the side the trace names (the caller when it names none).
				from := dialog.Caller
				if cs.call.Bye == ByeCallee {
					from = dialog.Callee
				}
				r.tracker.ByeFrom(callIDOf(s.call), at, from)
			}
		case stRegister:
			r.register(s, at)
		case stExpire:
			r.tracker.Expire(at)
			// The ticks run to a minute past the last step: while calls
			// are still unread, one of them starts after this tick.
			if t := s.at + time.Minute; r.hasPeek || t <= r.last+time.Minute {
				r.push(t, stExpire, 0)
			}
		}
		if r.curCall {
			cs := r.state(s.call)
			if cs.done {
				cs.req = nil // a call over holds no SIP message: long traces stay small
			}
			cs.steps--
			r.retire()
		}
	}
	return nil
}

// retire lets go of the calls at the front of live whose steps are all
// over, in the order of the trace.
func (r *runner) retire() {
	for r.n > 0 && r.live[r.head].steps == 0 {
		if r.hooks.done != nil {
			r.hooks.done(&r.live[r.head])
		}
		r.live[r.head] = callState{}
		r.head = (r.head + 1) & (len(r.live) - 1)
		r.n--
		r.base++
	}
}

func callIDOf(i int) string { return "c" + strconv.Itoa(i) + "@replay" }

func (r *runner) blocked(s step, kind string, v detect.Verdict, attempt int) {
	var cs *callState
	if kind != "register" {
		cs = r.state(s.call)
	}
	if r.hooks.block != nil {
		r.hooks.block(Block{At: s.at, Kind: kind, Index: s.call, Attempt: attempt, Rule: v.Rule, Status: v.Status}, cs)
	}
	if r.opts.StopAtFirstBlock {
		r.stopped = true
	}
}

func (r *runner) invite(s step, at time.Time) {
	cs := r.state(s.call)
	c := &cs.call
	req := buildInvite(c, s.call)
	line, remote := detect.Classify(r.lines, c.Direction, req)
	cs.req, cs.line, cs.remote, cs.dir = req, line, remote, c.Direction
	if c.Direction == detect.Outbound {
		r.attempts++
		cs.attempt = r.attempts
	}
	v := r.eng.Decide(&detect.Event{At: at, Direction: c.Direction, Line: line, Remote: remote, Request: req})
	call := dialog.Call{CallID: callIDOf(s.call), Line: line, Direction: c.Direction, Remote: remote, StartedAt: at}
	if v.Block {
		cs.done = true
		if line != "" && r.tracker.Begin(call) {
			r.tracker.Block(call.CallID, v.Rule, v.Status, at)
		}
		r.blocked(s, "invite", v, cs.attempt)
		return
	}
	if line != "" {
		r.tracker.Begin(call)
	}
}

// early is a provisional response: from the local side for an inbound
// call (decided, like the proxy does), from upstream for an outbound one.
func (r *runner) early(s step, at time.Time) {
	cs := r.state(s.call)
	if cs.done {
		return
	}
	c := &cs.call
	if c.Direction == detect.Inbound {
		res := sip.NewResponseFromRequest(cs.req, c.Early, "", nil)
		if c.EarlyDiversion {
			res.AppendHeader(sip.NewHeader("Diversion", "<sip:"+c.Line+"@pbx.example>;reason=no-answer"))
		}
		if r.decideResponse(s, at, res) {
			return
		}
	}
	r.tracker.Response(callIDOf(s.call), c.Early, at, 0)
}

func (r *runner) final(s step, at time.Time) {
	cs := r.state(s.call)
	if cs.done {
		return
	}
	c := &cs.call
	id := callIDOf(s.call)
	status := c.Status
	if status == 487 {
		r.tracker.Cancel(id, at)
	}
	if c.Direction == detect.Inbound && (status < 200 || status >= 300) && status != 487 {
		res := sip.NewResponseFromRequest(cs.req, status, "", nil)
		if status >= 300 && status < 400 {
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "+15550009999", Host: "pbx.example"}})
		}
		if r.decideResponse(s, at, res) {
			return
		}
	}
	if status < 200 || status >= 300 {
		cs.done = true
	}
	r.tracker.Response(id, status, at, 0)
}

// decideResponse shows the rules a response from the local side; it
// reports whether it was blocked.
func (r *runner) decideResponse(s step, at time.Time, res *sip.Response) bool {
	cs := r.state(s.call)
	v := r.eng.Decide(&detect.Event{At: at, Direction: cs.dir, Line: cs.line, Remote: cs.remote, Request: cs.req, Response: res})
	if !v.Block {
		return false
	}
	cs.done = true
	r.tracker.Block(callIDOf(s.call), v.Rule, v.Status, at)
	r.blocked(s, "response", v, cs.attempt)
	return true
}

func (r *runner) refer(s step, at time.Time) {
	cs := r.state(s.call)
	if cs.done {
		return
	}
	c := &cs.call
	req := sip.NewRequest(sip.REFER, sip.Uri{Scheme: "sip", User: c.Remote, Host: "edge.example"})
	addr := func(user, tag string) *sip.FromHeader {
		h := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: "pbx.example"}, Params: sip.NewParams()}
		h.Params.Add("tag", tag)
		return h
	}
	from := addr(c.Line, "a")
	to := sip.ToHeader(*addr(c.Remote, "b"))
	req.AppendHeader(from)
	req.AppendHeader(&to)
	cid := sip.CallIDHeader(callIDOf(s.call))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 2, MethodName: sip.REFER})
	req.AppendHeader(sip.NewHeader("Refer-To", "<sip:+15550008888@pbx.example>"))
	req.SetSource(LocalSource)
	v := r.eng.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: cs.line, Remote: cs.remote, InDialog: true, Request: req})
	if v.Block {
		// A refused REFER leaves the dialog up: the call goes on.
		r.blocked(s, "refer", v, cs.attempt)
	}
}

func (r *runner) register(s step, at time.Time) {
	g := &r.regs[s.call]
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "edge.example"})
	aor := sip.Uri{Scheme: "sip", User: g.Line, Host: "edge.example"}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", "r"+strconv.Itoa(s.call))
	to := &sip.ToHeader{Address: aor, Params: sip.NewParams()}
	req.AppendHeader(from)
	req.AppendHeader(to)
	cid := sip.CallIDHeader("r" + strconv.Itoa(s.call) + "@replay")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.REGISTER})
	var contact sip.Uri
	if err := sip.ParseUri(g.Contact, &contact); err == nil {
		req.AppendHeader(&sip.ContactHeader{Address: contact, Params: sip.NewParams()})
	}
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(g.Expires)))
	src := g.Source
	if src == "" {
		src = LocalSource
	}
	req.SetSource(src)
	line, remote := detect.Classify(r.lines, detect.Outbound, req)
	v := r.eng.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: line, Remote: remote, Request: req})
	if v.Block {
		r.blocked(s, "register", v, 0)
	}
}

// buildInvite makes the INVITE a call's trace describes, as a local PBX or
// the Leadport edge would send it.
func buildInvite(c *Call, i int) *sip.Request {
	var ruri, fromURI, toURI sip.Uri
	src := c.Source
	if c.Direction == detect.Outbound {
		from := c.From
		if from == "" {
			from = c.Line
		}
		ruri = sip.Uri{Scheme: "sip", User: c.Remote, Host: "edge.example"}
		fromURI = sip.Uri{Scheme: "sip", User: from, Host: "pbx.example"}
		toURI = ruri
		if src == "" {
			src = LocalSource
		}
	} else {
		ruri = sip.Uri{Scheme: "sip", User: c.Line, Host: "pbx.example"}
		fromURI = sip.Uri{Scheme: "sip", User: c.Remote, Host: "edge.example"}
		toURI = ruri
		if src == "" {
			src = UpstreamSource
		}
	}
	req := sip.NewRequest(sip.INVITE, ruri)
	from := &sip.FromHeader{Address: fromURI, Params: sip.NewParams()}
	from.Params.Add("tag", "f"+strconv.Itoa(i))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: toURI, Params: sip.NewParams()})
	cid := sip.CallIDHeader(callIDOf(i))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	if c.PAI != "" {
		req.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:"+c.PAI+"@pbx.example>"))
	}
	if c.RPID != "" {
		req.AppendHeader(sip.NewHeader("Remote-Party-ID", "<sip:"+c.RPID+"@pbx.example>;party=calling"))
	}
	for _, d := range c.Diversion {
		req.AppendHeader(sip.NewHeader("Diversion", "<sip:"+d+"@pbx.example>;reason=unconditional"))
	}
	for _, h := range c.HistoryInfo {
		req.AppendHeader(sip.NewHeader("History-Info", h))
	}
	req.SetSource(src)
	return req
}

// String describes a block for reports.
func (b Block) String() string {
	return fmt.Sprintf("%s #%d at %s: %d %s", b.Kind, b.Index, b.At, b.Status, b.Rule)
}
