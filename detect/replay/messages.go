package replay

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/capture"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
)

// Captured SIP messages through the rules: `leadport-agent analyze` on a
// pcap. The messages drive the dialog tracker and the rules engine the way
// the proxy does (sipproxy/handle.go), at the capture's own times: initial
// INVITEs, REFER, REGISTER, SUBSCRIBE and MESSAGE are decided; responses
// from the local side to inbound INVITEs are decided; CANCEL, BYE and
// responses feed the tracker. A request the rules block is treated as the
// proxy would treat it: the call ends there, and the rest of its messages
// in the capture (which went through, since no agent was in the path) are
// left out.
//
// A capture holds the same message more than once: at each hop past the
// capture point, and in retransmissions. The proxy sees each request
// once, so a request whose Call-ID, CSeq and method were seen before is
// skipped, and so is a response seen before (same Call-ID, CSeq, status
// and To tag).

// CaptureOptions tune a replay of captured messages.
type CaptureOptions struct {
	// Lines are the device's lines. Empty: the policy's; when it has none
	// either, they are inferred (InferLines).
	Lines          []string
	DefaultCountry string
	// Start is the time of offset 0 for Block.At and Call.Start; default
	// the first message's.
	Start time.Time
}

// Analysis is what the rules made of a trace or a capture, in one form for
// reports: the calls as a trace describes them, the replay's Result, and
// for each trip the call it concerns.
type Analysis struct {
	// Calls in order of their first INVITE. Block.Index (for kinds other
	// than "register") and TripCall index into it.
	Calls []Call
	// Result of the replay. In a capture's, Block.Index counts REGISTERs
	// for kind "register", as a trace's counts its Registers.
	Result *Result
	// TripCall gives, for each of Result.Trips, the index of its call in
	// Calls, or -1 for a trip that concerns no call (a REGISTER).
	TripCall []int
	// Lines the replay took as the device's; InferredLines is set when
	// they were inferred from a capture rather than given.
	Lines         []string
	InferredLines bool
	// Skipped counts captured messages that could not be read as SIP.
	Skipped int
}

// AnalyzeTrace replays a trace (Run) and puts the result in the form of
// an Analysis. The policy's lines are the trace's when it names none.
func AnalyzeTrace(tr *Trace, pol policy.Policy, opts Options) (*Analysis, error) {
	if len(pol.Lines) == 0 {
		pol.Lines = tr.Lines
	}
	res, err := Run(tr, pol, opts)
	if err != nil {
		return nil, err
	}
	a := &Analysis{Calls: tr.Calls, Result: res, Lines: pol.Lines}
	// A trace's violations carry the Call-ID the replay gave the call it
	// decided on; a register's is another form.
	for i, t := range res.Trips {
		idx := -1
		if i < len(res.Violations) && t.Index < len(tr.Calls) && res.Violations[i].CallID == callIDOf(t.Index) {
			idx = t.Index
		}
		a.TripCall = append(a.TripCall, idx)
	}
	return a, nil
}

// InferLines guesses the device's lines from a capture, which does not
// say which side is the device. Candidates are the From users of initial
// INVITEs that are E.164 numbers (a + and 8 to 15 digits, or 10 to 15
// digits that normalise with the default country); extensions ("200")
// and names are not lines. A candidate is a line when it places more
// than one call, or also receives one (it is the Request-URI or To of an
// INVITE): a remote caller seldom does either within one capture. When
// no candidate qualifies (a capture of a single call), every candidate is
// taken. The guess is a starting point; a technician who knows the lines
// passes them.
func InferLines(msgs []capture.Message, defaultCountry string) []string {
	norm, _ := detect.NewLines(nil, defaultCountry)
	var cands []string
	calls := map[string]map[string]bool{} // candidate -> Call-IDs it placed
	called := map[string]bool{}
	for i := range msgs {
		b := msgs[i].Data
		if len(b) < 7 || string(b[:7]) != "INVITE " {
			continue
		}
		msg, err := sip.ParseMessage(b)
		if err != nil {
			continue
		}
		req, ok := msg.(*sip.Request)
		if !ok || hasToTag(req) || req.From() == nil || req.CallID() == nil {
			continue
		}
		for _, u := range []string{req.Recipient.User, toUser(req)} {
			if n, ok := norm.Normalize(u); ok {
				called[n] = true
			}
		}
		u := req.From().Address.User
		if !looksE164(u) {
			continue
		}
		n, ok := norm.Normalize(u)
		if !ok {
			continue
		}
		if calls[n] == nil {
			calls[n] = map[string]bool{}
			cands = append(cands, n)
		}
		calls[n][req.CallID().Value()] = true
	}
	var out []string
	for _, n := range cands {
		if len(calls[n]) > 1 || called[n] {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return cands
	}
	return out
}

func looksE164(u string) bool {
	d := strings.TrimPrefix(u, "+")
	if len(d) < 8 || len(d) > 15 || (d == u && len(d) < 10) {
		return false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// AnalyzeMessages replays captured SIP messages (in time order, as
// capture.Read returns them) through a fresh engine and tracker with the
// policy, in the capture's time.
func AnalyzeMessages(msgs []capture.Message, pol policy.Policy, opts CaptureOptions) (*Analysis, error) {
	a := &Analysis{Result: &Result{}}
	switch {
	case len(opts.Lines) > 0:
		pol.Lines = opts.Lines
	case len(pol.Lines) == 0:
		pol.Lines = InferLines(msgs, opts.DefaultCountry)
		a.InferredLines = true
	}
	a.Lines = pol.Lines
	m := &msgRunner{a: a, calls: map[string]*capCall{}, seen: map[string]bool{}}
	var err error
	m.eng, m.tracker, err = newRig(pol, opts.DefaultCountry, func(v rules.Violation) {
		a.Result.Violations = append(a.Result.Violations, v)
		a.Result.Trips = append(a.Result.Trips, TripOf(v, m.cur, m.attempts))
		a.TripCall = append(a.TripCall, m.curCall)
	}, m.ended)
	if err != nil {
		return nil, err
	}
	m.lines = m.eng.Lines()
	m.t0 = opts.Start
	if len(msgs) > 0 && m.t0.IsZero() {
		m.t0 = msgs[0].At
	}
	m.nextExpire = m.t0.Add(time.Minute)
	for i := range msgs {
		m.message(&msgs[i])
	}
	if len(msgs) > 0 {
		m.expireUntil(msgs[len(msgs)-1].At.Add(time.Minute))
	}
	return a, nil
}

// newRig makes the engine and tracker of a replay, wired as the agent
// wires them: the tracker tells the engine of answers and ends.
func newRig(pol policy.Policy, country string, onViolation func(rules.Violation), onEnd func(dialog.Call)) (*rules.Engine, *dialog.Tracker, error) {
	eng, err := rules.New(pol, rules.Options{DefaultCountry: country, OnViolation: onViolation})
	if err != nil {
		return nil, nil, fmt.Errorf("replay: %w", err)
	}
	tr := dialog.New(dialog.Options{
		OnAnswer: eng.CallAnswered,
		OnEnd: func(c dialog.Call) {
			eng.CallEnded(c)
			if onEnd != nil {
				onEnd(c)
			}
		},
	})
	return eng, tr, nil
}

// capCall is a call of the capture being replayed.
type capCall struct {
	idx     int
	line    string
	remote  string
	dir     detect.Direction
	req     *sip.Request // the initial INVITE
	fromTag string
	cseq    uint32 // of the latest initial INVITE (a challenged one is re-sent)
	attempt int
	// done: blocked or ended; the call's later messages are left out.
	done       bool
	answeredAt time.Time
	// cancelAt is the caller's CANCEL: a trace's ring_s of a call given
	// up (487) runs to it, not to the 487 that follows.
	cancelAt time.Time
}

// over marks the call done. Its INVITE, kept to decide the responses
// from the local side, goes: a capture of many calls holds only those in
// flight (a parsed request is some kilobytes; the description of a call
// for the report, and its Call-ID to leave out its late copies, stay).
func (c *capCall) over() {
	c.done, c.req = true, nil
}

type msgRunner struct {
	a       *Analysis
	eng     *rules.Engine
	tracker *dialog.Tracker
	lines   *detect.Lines
	calls   map[string]*capCall // by Call-ID
	// seen holds the requests and responses replayed, to skip the copies
	// a capture holds of each.
	seen       map[string]bool
	t0         time.Time
	nextExpire time.Time
	attempts   int
	registers  int
	// cur and curCall say what the decision under way concerns, for the
	// trips it reports: cur as Trip.Index, curCall as Analysis.TripCall.
	cur, curCall int
}

// expireUntil runs the tracker's expiry as the proxy does, once a minute.
func (m *msgRunner) expireUntil(t time.Time) {
	if t.Sub(m.nextExpire) > time.Hour && m.tracker.Stats().Active == 0 {
		// Nothing to expire: skip a long quiet stretch (a capture taken
		// over days, or with a clock that jumped) in one step.
		m.nextExpire = m.nextExpire.Add(t.Sub(m.nextExpire).Truncate(time.Minute))
	}
	for !m.nextExpire.After(t) {
		m.tracker.Expire(m.nextExpire)
		m.nextExpire = m.nextExpire.Add(time.Minute)
	}
}

func (m *msgRunner) message(msg *capture.Message) {
	m.expireUntil(msg.At)
	parsed, err := sip.ParseMessage(msg.Data)
	if err != nil {
		// Some phones write IPv6 hosts in URIs and Via without the
		// brackets RFC 3261 asks for; read them as they mean.
		if fixed, ok := bracketIPv6(msg.Data); ok {
			parsed, err = sip.ParseMessage(fixed)
		}
	}
	if err != nil {
		m.a.Skipped++
		return
	}
	switch x := parsed.(type) {
	case *sip.Request:
		if x.CallID() == nil || x.CSeq() == nil {
			m.a.Skipped++
			return
		}
		x.SetSource(msg.Src.String())
		x.SetDestination(msg.Dst.String())
		m.request(x, msg.At)
	case *sip.Response:
		if x.CallID() == nil || x.CSeq() == nil {
			m.a.Skipped++
			return
		}
		m.response(x, msg.At)
	}
}

func (m *msgRunner) once(key string) bool {
	if m.seen[key] {
		return false
	}
	m.seen[key] = true
	return true
}

func (m *msgRunner) request(req *sip.Request, at time.Time) {
	id := req.CallID().Value()
	cseq := req.CSeq().SeqNo
	if !m.once("q " + string(req.Method) + " " + strconv.FormatUint(uint64(cseq), 10) + " " + id) {
		return
	}
	c := m.calls[id]
	if c != nil && c.done {
		return
	}
	inDialog := hasToTag(req)
	m.cur, m.curCall = 0, -1
	if c != nil {
		m.cur, m.curCall = c.idx, c.idx
	}
	switch {
	case req.Method == sip.INVITE && !inDialog:
		m.invite(req, c, at)
	case req.Method == sip.CANCEL:
		if c != nil {
			m.tracker.Cancel(id, at)
			if c.cancelAt.IsZero() {
				c.cancelAt = at
			}
		}
	case req.Method == sip.BYE:
		if c != nil {
			m.bye(c, req, at)
		}
	case req.Method == sip.REGISTER:
		m.cur = m.registers
		m.registers++
		line, remote := detect.Classify(m.lines, detect.Outbound, req)
		v := m.eng.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: line, Remote: remote, Request: req})
		if v.Block {
			m.block(at, "register", nil, m.cur, v)
		}
	case req.Method == sip.REFER || req.Method == sip.SUBSCRIBE || req.Method == sip.MESSAGE || req.Method == sip.INVITE:
		// In-dialog requests of a call take its line; the side that
		// sends them is the call's caller when the From tag is the
		// INVITE's.
		dir, line, remote := detect.Outbound, "", ""
		if c != nil {
			dir, line, remote = c.dir, c.line, c.remote
			if inDialog && fromTag(req) != c.fromTag {
				dir = opposite(dir)
			}
		} else {
			dir, line, remote = m.classify(req)
		}
		v := m.eng.Decide(&detect.Event{At: at, Direction: dir, Line: line, Remote: remote, InDialog: inDialog, Request: req})
		if v.Block && req.Method == sip.REFER && c != nil {
			// A refused REFER leaves the dialog up: the call goes on.
			m.block(at, "refer", c, c.idx, v)
		}
	}
}

// classify takes a request's line and direction from its numbers: the
// capture does not say which side is the device. A From (or P-Asserted-
// Identity) naming a line is the line calling out; a Request-URI or To
// naming one, a call in. A call between two numbers that are not lines is
// taken as outbound, not on a line.
func (m *msgRunner) classify(req *sip.Request) (detect.Direction, string, string) {
	if line, remote := detect.Classify(m.lines, detect.Outbound, req); line != "" {
		return detect.Outbound, line, remote
	}
	if line, remote := detect.Classify(m.lines, detect.Inbound, req); line != "" {
		return detect.Inbound, line, remote
	}
	_, remote := detect.Classify(m.lines, detect.Outbound, req)
	return detect.Outbound, "", remote
}

func (m *msgRunner) invite(req *sip.Request, c *capCall, at time.Time) {
	id := req.CallID().Value()
	if c == nil {
		dir, line, remote := m.classify(req)
		c = &capCall{idx: len(m.a.Calls), line: line, remote: remote, dir: dir, req: req, fromTag: fromTag(req)}
		m.calls[id] = c
		m.cur, m.curCall = c.idx, c.idx
		if dir == detect.Outbound {
			m.attempts++
			m.a.Result.Attempts = m.attempts
			c.attempt = m.attempts
		}
		m.a.Calls = append(m.a.Calls, m.callOf(req, c, at.Sub(m.t0)))
	}
	// A second INVITE outside a dialog with the same Call-ID is the first
	// one re-sent with credentials after a 401/407: the proxy decides it
	// again (the engine counts the attempt once) and the tracker keeps
	// one call.
	c.cseq = req.CSeq().SeqNo
	v := m.eng.Decide(&detect.Event{At: at, Direction: c.dir, Line: c.line, Remote: c.remote, Request: req})
	call := dialog.Call{CallID: id, Line: c.line, Direction: c.dir, Remote: c.remote, StartedAt: at}
	if c.line != "" {
		m.tracker.Begin(call)
	}
	if v.Block {
		m.tracker.Block(id, v.Rule, v.Status, at)
		m.block(at, "invite", c, c.idx, v)
	}
}

// callOf describes a captured call as a trace would; ring, status, talk
// and who hung up are filled in as its messages come.
func (m *msgRunner) callOf(req *sip.Request, c *capCall, start time.Duration) Call {
	out := Call{Start: start, Direction: c.dir, Line: c.line, Remote: c.remote}
	if c.dir == detect.Outbound {
		if f := req.From(); f != nil {
			if n, _ := m.lines.Normalize(f.Address.User); n != c.line {
				out.From = f.Address.User
			}
		}
		if h := req.GetHeader("P-Asserted-Identity"); h != nil {
			out.PAI = uriUser(h.Value())
		}
	}
	for _, h := range req.GetHeaders("Diversion") {
		out.Diversion = append(out.Diversion, uriUser(h.Value()))
	}
	for _, h := range req.GetHeaders("History-Info") {
		out.HistoryInfo = append(out.HistoryInfo, h.Value())
	}
	out.Source = req.Source()
	return out
}

// block records a refusal. c is the call (nil for a REGISTER, whose
// index among the capture's REGISTERs is idx); a call refused at its
// INVITE or at a response from the local side ends there.
func (m *msgRunner) block(at time.Time, kind string, c *capCall, idx int, v detect.Verdict) {
	attempt := 0
	if c != nil {
		attempt = c.attempt
	}
	m.a.Result.Blocks = append(m.a.Result.Blocks, Block{At: at.Sub(m.t0), Kind: kind, Index: idx, Attempt: attempt, Rule: v.Rule, Status: v.Status})
	if c == nil || kind == "refer" {
		return
	}
	c.over()
	if call := &m.a.Calls[idx]; call.Status == 0 || call.Status == 401 || call.Status == 407 {
		call.Status, call.Ring = v.Status, at.Sub(m.t0)-call.Start
	}
}

// bye ends a call. Who sent the BYE is a pacing signal: the caller when
// the BYE's From tag is the INVITE's, else the callee.
func (m *msgRunner) bye(c *capCall, req *sip.Request, at time.Time) {
	party, by := dialog.Callee, ByeCallee
	if fromTag(req) == c.fromTag {
		party, by = dialog.Caller, ByeCaller
	}
	call := &m.a.Calls[c.idx]
	if !c.answeredAt.IsZero() && call.Bye == "" {
		call.Bye, call.Talk = by, at.Sub(c.answeredAt)
	}
	m.tracker.ByeFrom(req.CallID().Value(), at, party)
}

func (m *msgRunner) response(res *sip.Response, at time.Time) {
	id := res.CallID().Value()
	c := m.calls[id]
	cs := res.CSeq()
	if c == nil || c.done || cs.MethodName != sip.INVITE && cs.MethodName != sip.UPDATE {
		return
	}
	var toTag string
	if to := res.To(); to != nil {
		toTag, _ = to.Params.Get("tag")
	}
	if !m.once("s " + strconv.Itoa(res.StatusCode) + " " + string(cs.MethodName) + " " + strconv.FormatUint(uint64(cs.SeqNo), 10) + " " + toTag + " " + id) {
		return
	}
	m.cur, m.curCall = c.idx, c.idx
	status := res.StatusCode
	if cs.MethodName != sip.INVITE || cs.SeqNo != c.cseq {
		// A re-INVITE's or UPDATE's answer refreshes the session.
		if status >= 200 && status < 300 {
			m.tracker.Refresh(id, at, sessionExpires(res))
		}
		return
	}
	if c.dir == detect.Inbound && status > 100 && (status < 200 || status >= 300) {
		v := m.eng.Decide(&detect.Event{At: at, Direction: c.dir, Line: c.line, Remote: c.remote, Request: c.req, Response: res})
		if v.Block {
			m.tracker.Block(id, v.Rule, v.Status, at)
			m.block(at, "response", c, c.idx, v)
			return
		}
	}
	// The call's description first: the tracker may end the call, and
	// ended fills in what is still missing.
	defer m.tracker.Response(id, status, at, sessionExpires(res))
	call := &m.a.Calls[c.idx]
	switch {
	case status >= 200 && status < 300 && c.answeredAt.IsZero():
		c.answeredAt = at
		call.Status, call.Ring = status, at.Sub(m.t0)-call.Start
	case status >= 300 && status != 401 && status != 407 && call.Status == 0:
		end := at
		if status == 487 && !c.cancelAt.IsZero() {
			end = c.cancelAt
		}
		call.Status, call.Ring = status, end.Sub(m.t0)-call.Start
		c.over()
	}
}

// ended notes a call the tracker ended by expiry, for its description.
func (m *msgRunner) ended(dc dialog.Call) {
	c := m.calls[dc.CallID]
	if c == nil {
		return
	}
	call := &m.a.Calls[c.idx]
	if dc.Expired && !dc.AnsweredAt.IsZero() && call.Talk == 0 {
		call.Talk = dc.EndedAt.Sub(dc.AnsweredAt)
	}
	if call.Status == 0 && dc.FinalStatus != 0 {
		call.Status = dc.FinalStatus
		call.Ring = dc.EndedAt.Sub(m.t0) - call.Start
	}
	c.over()
}

// bracketIPv6 puts brackets around bare IPv6 hosts (with or without a
// port) after "sip:", "sips:" and a Via's transport, which some user
// agents leave out ("sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060"). ok is
// false when there was none.
func bracketIPv6(b []byte) ([]byte, bool) {
	s := string(b)
	var out strings.Builder
	changed := false
	for {
		i := -1
		for _, mark := range []string{"sip:", "sips:", "/UDP ", "/TCP ", "/TLS ", "/SCTP ", "/WS ", "/WSS "} {
			if j := strings.Index(s, mark); j >= 0 && (i < 0 || j+len(mark) < i) {
				i = j + len(mark)
			}
		}
		if i < 0 {
			break
		}
		out.WriteString(s[:i])
		s = s[i:]
		// Skip a user part: up to an @ before any delimiter.
		end := strings.IndexAny(s, ">;? \t\r\n,")
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndexByte(s[:end], '@'); at >= 0 {
			out.WriteString(s[:at+1])
			s, end = s[at+1:], end-at-1
		}
		host := s[:end]
		if strings.Count(host, ":") >= 2 && !strings.HasPrefix(host, "[") {
			if _, err := netip.ParseAddr(host); err == nil {
				host, changed = "["+host+"]", true
			} else if k := strings.LastIndexByte(host, ':'); k > 0 {
				if _, err := netip.ParseAddr(host[:k]); err == nil {
					if _, err := strconv.Atoi(host[k+1:]); err == nil {
						host, changed = "["+host[:k]+"]"+host[k:], true
					}
				}
			}
		}
		out.WriteString(host)
		s = s[end:]
	}
	out.WriteString(s)
	return []byte(out.String()), changed
}

func hasToTag(req *sip.Request) bool {
	if to := req.To(); to != nil {
		_, ok := to.Params.Get("tag")
		return ok
	}
	return false
}

func toUser(req *sip.Request) string {
	if t := req.To(); t != nil {
		return t.Address.User
	}
	return ""
}

func fromTag(req *sip.Request) string {
	if f := req.From(); f != nil {
		t, _ := f.Params.Get("tag")
		return t
	}
	return ""
}

func opposite(d detect.Direction) detect.Direction {
	if d == detect.Outbound {
		return detect.Inbound
	}
	return detect.Outbound
}

// uriUser is the user part of a name-addr or addr-spec header value
// ("<sip:+1555...@host>;reason=x" -> "+1555...").
func uriUser(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		v = v[i+1:]
		if j := strings.IndexByte(v, '>'); j >= 0 {
			v = v[:j]
		}
	}
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	if i := strings.IndexAny(v, "@;>"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// sessionExpires reads a 2xx's Session-Expires (RFC 4028; compact "x").
func sessionExpires(res *sip.Response) time.Duration {
	h := res.GetHeader("Session-Expires")
	if h == nil {
		h = res.GetHeader("x")
	}
	if h == nil {
		return 0
	}
	v, _, _ := strings.Cut(h.Value(), ";")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// LineReport is what the rules made of one line: its outbound attempts,
// the attempts that got its first suspect report and first block, and the
// rules that tripped.
type LineReport struct {
	Line     string
	Attempts int
	// FirstSuspect and FirstBlock are 1-based numbers among the line's
	// outbound attempts; 0 when there was none.
	FirstSuspect, FirstBlock int
	Rules                    []RuleReport
}

// RuleReport is one rule's trips on a line, with the figures of the first.
type RuleReport struct {
	Rule   string
	Action string // blocked, observed, or TripSuspect
	Count  int
	// FirstAttempt is the line's attempt number at the first trip (0:
	// not during an attempt, e.g. a REGISTER).
	FirstAttempt int
	Evidence     map[string]any
}

// LineAttempts numbers each call among its line's outbound attempts,
// from 1; 0 for calls that are not outbound attempts on one of the lines
// replayed (a trace's call on a line that --lines left out is not).
func (a *Analysis) LineAttempts() []int {
	out := make([]int, len(a.Calls))
	n := newAttemptCounter(a.Lines)
	for i := range a.Calls {
		out[i] = n.next(&a.Calls[i])
	}
	return out
}

// attemptCounter numbers the outbound attempts of each line replayed.
type attemptCounter map[string]int

func newAttemptCounter(lines []string) attemptCounter {
	n := make(attemptCounter, len(lines))
	for _, l := range lines {
		n[l] = 0
	}
	return n
}

// next is the call's number among its line's attempts, 0 when it is none.
func (n attemptCounter) next(c *Call) int {
	if k, ok := n[c.Line]; ok && c.Direction == detect.Outbound {
		n[c.Line] = k + 1
		return k + 1
	}
	return 0
}

// LineReports reports per line, in the order of Analysis.Lines, then any other
// line the calls or trips name.
func (a *Analysis) LineReports() []LineReport {
	att := a.LineAttempts()
	lr := newLineReporter(a.Lines)
	for i, c := range a.Calls {
		lr.attempt(c.Line, att[i])
	}
	for _, b := range a.Result.Blocks {
		if b.Kind == "register" || b.Index >= len(a.Calls) {
			continue
		}
		lr.block(a.Calls[b.Index].Line, att[b.Index])
	}
	for i, t := range a.Result.Trips {
		var v rules.Violation
		if i < len(a.Result.Violations) {
			v = a.Result.Violations[i]
		}
		var c *Call
		attempt := 0
		if ci := a.TripCall[i]; ci >= 0 {
			c, attempt = &a.Calls[ci], att[ci]
		}
		lr.trip(t, &v, c, attempt)
	}
	return lr.reports()
}

// lineReporter builds the line reports from the attempts, blocks and
// trips of a replay, in any interleaving: a stream (StreamTrace) hands
// them over as they happen, an Analysis phase by phase, and both get the
// same reports. The lines come in the order of the lines replayed, then
// those first named by a block, then those first named by a trip.
type lineReporter struct {
	byLine            map[string]*LineReport
	lines             []string
	byBlock, byTrip   []string
	inBlocks, inTrips map[string]bool
}

func newLineReporter(lines []string) *lineReporter {
	lr := &lineReporter{byLine: map[string]*LineReport{}, inBlocks: map[string]bool{}, inTrips: map[string]bool{}}
	for _, l := range lines {
		lr.get(l)
		lr.lines = append(lr.lines, l)
	}
	return lr
}

func (lr *lineReporter) get(l string) *LineReport {
	if r := lr.byLine[l]; r != nil {
		return r
	}
	r := &LineReport{Line: l}
	lr.byLine[l] = r
	return r
}

// attempt notes a call that is its line's attempt number n (0: none).
func (lr *lineReporter) attempt(line string, n int) {
	if n > 0 {
		lr.get(line).Attempts = n
	}
}

// block notes a call refused (at its INVITE, a response, a REFER); n is
// its attempt number on its line.
func (lr *lineReporter) block(line string, n int) {
	if !lr.inBlocks[line] {
		lr.inBlocks[line] = true
		lr.byBlock = append(lr.byBlock, line)
	}
	if r := lr.get(line); line != "" && n > 0 && r.FirstBlock == 0 {
		r.FirstBlock = n
	}
}

// trip notes a trip and its violation; c is the call it concerns (nil
// for none) and n that call's attempt number on its line.
func (lr *lineReporter) trip(t Trip, v *rules.Violation, c *Call, n int) {
	line := v.Line
	if c != nil && line == "" {
		line = c.Line
	}
	if line == "" {
		return
	}
	if !lr.inTrips[line] {
		lr.inTrips[line] = true
		lr.byTrip = append(lr.byTrip, line)
	}
	r := lr.get(line)
	if t.Action == TripSuspect && n > 0 && r.FirstSuspect == 0 {
		r.FirstSuspect = n
	}
	k := slices.IndexFunc(r.Rules, func(x RuleReport) bool { return x.Rule == t.Rule && x.Action == t.Action })
	if k < 0 {
		r.Rules = append(r.Rules, RuleReport{Rule: t.Rule, Action: t.Action, FirstAttempt: n, Evidence: v.Evidence})
		k = len(r.Rules) - 1
	}
	r.Rules[k].Count++
}

func (lr *lineReporter) reports() []LineReport {
	out := make([]LineReport, 0, len(lr.byLine))
	seen := make(map[string]bool, len(lr.byLine))
	for _, order := range [][]string{lr.lines, lr.byBlock, lr.byTrip} {
		for _, l := range order {
			if seen[l] {
				continue
			}
			seen[l] = true
			r := lr.byLine[l]
			slices.SortStableFunc(r.Rules, func(x, y RuleReport) int { return cmp.Compare(x.Rule, y.Rule) })
			out = append(out, *r)
		}
	}
	return out
}

// CallReport is one call with what the rules made of it: a row of
// analyze's table.
type CallReport struct {
	// Index is the call's place in its input, from 0.
	Index int
	Call  *Call
	// Attempt is the call's number among its line's outbound attempts,
	// from 1; 0 for other calls.
	Attempt int
	// Rule and Status say what refused the call (Rule empty: allowed).
	Rule   string
	Status int
	// Observed and Suspect are the rules that reported on the call
	// without blocking it, each once, in the order they first did.
	Observed, Suspect []string
}

// noteBlock folds a block of the call into its report: the first one
// that is not a REFER's says what refused the call (a refused REFER
// leaves the call up).
func (r *CallReport) noteBlock(b Block) {
	if b.Kind != "refer" && b.Kind != "register" && r.Rule == "" {
		r.Rule, r.Status = b.Rule, b.Status
	}
}

func (r *CallReport) noteTrip(t Trip) {
	switch t.Action {
	case TripSuspect:
		if !slices.Contains(r.Suspect, t.Rule) {
			r.Suspect = append(r.Suspect, t.Rule)
		}
	case string(rules.ActionObserved):
		if !slices.Contains(r.Observed, t.Rule) {
			r.Observed = append(r.Observed, t.Rule)
		}
	}
}

// EachCall hands over each call's report, in order.
func (a *Analysis) EachCall(fn func(*CallReport) error) error {
	reps := make([]CallReport, len(a.Calls))
	for i, n := range a.LineAttempts() {
		reps[i] = CallReport{Index: i, Call: &a.Calls[i], Attempt: n}
	}
	for _, b := range a.Result.Blocks {
		if b.Kind != "register" && b.Index < len(reps) {
			reps[b.Index].noteBlock(b)
		}
	}
	for i, t := range a.Result.Trips {
		if ci := a.TripCall[i]; ci >= 0 {
			reps[ci].noteTrip(t)
		}
	}
	for i := range reps {
		if err := fn(&reps[i]); err != nil {
			return err
		}
	}
	return nil
}

// StreamSummary is what a stream (StreamTrace) tells at its end.
type StreamSummary struct {
	Lines    []string
	Calls    int
	Attempts int // outbound attempts, on a line or not
	Reports  []LineReport
}

// StreamTrace replays the calls next hands out (in order of start, as a
// TraceReader reads a trace file; io.EOF after the last) with the policy,
// and hands each call's report to onCall, in order, as soon as it is
// final. lines are the trace's lines, taken when the policy names none.
// Only the calls in flight are held, so a trace of any length replays
// in the memory of its busiest minutes; the results are those of
// AnalyzeTrace on the whole trace.
func StreamTrace(next func() (Call, error), lines []string, pol policy.Policy, opts Options, onCall func(*CallReport) error) (*StreamSummary, error) {
	if len(pol.Lines) == 0 {
		pol.Lines = lines
	}
	sum := &StreamSummary{Lines: pol.Lines}
	lr := newLineReporter(pol.Lines)
	att := newAttemptCounter(pol.Lines)
	var stop error
	read := func() (Call, error) {
		if stop != nil {
			return Call{}, stop // onCall failed (its writer): the replay ends
		}
		return next()
	}
	hooks := runHooks{
		// The attempts are numbered in the order of the trace, as the
		// calls are scheduled.
		begin: func(cs *callState) {
			cs.report = CallReport{Index: cs.index, Attempt: att.next(&cs.call)}
			lr.attempt(cs.call.Line, cs.report.Attempt)
		},
		violation: func(v rules.Violation, t Trip, cs *callState) {
			var c *Call
			n := 0
			if cs != nil {
				cs.report.noteTrip(t)
				c, n = &cs.call, cs.report.Attempt
			}
			lr.trip(t, &v, c, n)
		},
		block: func(b Block, cs *callState) {
			if cs == nil {
				return
			}
			cs.report.noteBlock(b)
			lr.block(cs.call.Line, cs.report.Attempt)
		},
		done: func(cs *callState) {
			sum.Calls++
			if stop == nil {
				cs.report.Call = &cs.call
				stop = onCall(&cs.report)
			}
		},
	}
	err := replay(read, nil, pol, opts, hooks, &sum.Attempts)
	if err == nil {
		err = stop
	}
	if err != nil {
		return nil, err
	}
	sum.Reports = lr.reports()
	return sum, nil
}
