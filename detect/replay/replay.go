package replay

import (
	"container/heap"
	"fmt"
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
	if opts.Start.IsZero() {
		opts.Start = Epoch
	}
	if len(pol.Lines) == 0 {
		pol.Lines = tr.Lines
	}
	res := &Result{}
	var onViolation func(rules.Violation)
	eng, err := rules.New(pol, rules.Options{
		DefaultCountry: opts.DefaultCountry,
		OnViolation:    func(v rules.Violation) { onViolation(v) },
	})
	if err != nil {
		return nil, err
	}
	r := &runner{tr: tr, eng: eng, res: res, opts: opts, lines: eng.Lines()}
	onViolation = func(v rules.Violation) {
		res.Violations = append(res.Violations, v)
		res.Trips = append(res.Trips, TripOf(v, r.cur, r.attempts))
	}
	r.tracker = dialog.New(dialog.Options{OnEnd: eng.CallEnded, OnAnswer: eng.CallAnswered})
	r.schedule()
	r.loop()
	return res, nil
}

type step struct {
	at   time.Duration
	seq  int
	kind stepKind
	call int // index into tr.Calls, or tr.Registers for register steps
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

type queue []step

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(step)) }
func (q *queue) Pop() any {
	old := *q
	s := old[len(old)-1]
	*q = old[:len(old)-1]
	return s
}

type runner struct {
	tr      *Trace
	eng     *rules.Engine
	tracker *dialog.Tracker
	lines   *detect.Lines
	res     *Result
	opts    Options
	q       queue
	seq     int
	stopped bool

	state    []callState
	attempts int
	cur      int // index of the call or register being decided
}

type callState struct {
	req     *sip.Request
	line    string
	remote  string
	dir     detect.Direction
	attempt int
	done    bool // blocked or ended: later steps are skipped
}

func (r *runner) push(at time.Duration, kind stepKind, i int) {
	r.seq++
	heap.Push(&r.q, step{at: at, seq: r.seq, kind: kind, call: i})
}

func (r *runner) schedule() {
	r.state = make([]callState, len(r.tr.Calls))
	var last time.Duration
	for i, c := range r.tr.Calls {
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
		last = max(last, c.Start+c.Ring+c.Talk)
	}
	for i, g := range r.tr.Registers {
		r.push(g.At, stRegister, i)
		last = max(last, g.At)
	}
	// The tracker's expiry, as the proxy runs it, once a simulated minute.
	for t := time.Minute; t <= last+time.Minute; t += time.Minute {
		r.push(t, stExpire, 0)
	}
}

func (r *runner) loop() {
	for r.q.Len() > 0 && !r.stopped {
		s := heap.Pop(&r.q).(step)
		r.cur = s.call
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
			if cs := &r.state[s.call]; !cs.done {
				cs.done = true
				// Who hangs up is a pacing signal, so the BYE comes from
				// the side the trace names (the caller when it names none).
				from := dialog.Caller
				if r.tr.Calls[s.call].Bye == ByeCallee {
					from = dialog.Callee
				}
				r.tracker.ByeFrom(callIDOf(s.call), at, from)
			}
		case stRegister:
			r.register(s, at)
		case stExpire:
			r.tracker.Expire(at)
		}
		if s.kind != stRegister && s.kind != stExpire && r.state[s.call].done {
			r.state[s.call].req = nil // a call over holds no SIP message: long traces stay small
		}
	}
}

func callIDOf(i int) string { return "c" + strconv.Itoa(i) + "@replay" }

func (r *runner) blocked(s step, kind string, v detect.Verdict, attempt int) {
	r.res.Blocks = append(r.res.Blocks, Block{At: s.at, Kind: kind, Index: s.call, Attempt: attempt, Rule: v.Rule, Status: v.Status})
	if r.opts.StopAtFirstBlock {
		r.stopped = true
	}
}

func (r *runner) invite(s step, at time.Time) {
	c := &r.tr.Calls[s.call]
	req := buildInvite(c, s.call)
	line, remote := detect.Classify(r.lines, c.Direction, req)
	cs := &r.state[s.call]
	cs.req, cs.line, cs.remote, cs.dir = req, line, remote, c.Direction
	if c.Direction == detect.Outbound {
		r.attempts++
		r.res.Attempts = r.attempts
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
	cs := &r.state[s.call]
	if cs.done {
		return
	}
	c := &r.tr.Calls[s.call]
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
	cs := &r.state[s.call]
	if cs.done {
		return
	}
	c := &r.tr.Calls[s.call]
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
	cs := &r.state[s.call]
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
	cs := &r.state[s.call]
	if cs.done {
		return
	}
	c := &r.tr.Calls[s.call]
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
	g := &r.tr.Registers[s.call]
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
