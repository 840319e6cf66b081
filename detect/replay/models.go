package replay

// The behaviour models of `make eval`: people and machines using a line,
// and forwarding, trunking and honest PBX scenarios. Every figure below is
// explained in docs/eval-models.md; the comments here say only why the code
// is shaped as it is. All randomness comes from the *rand.Rand passed in,
// so a trace is reproducible from its seed.

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

// Model is one behaviour model.
type Model struct {
	Name  string // short id, e.g. "human.manual_leads", "machine.predictive"
	Class Class
	Rule  string // the rule expected to catch it ("" for human/honest)
	About string // one line: what it models
	// Generate returns one trace: for Human and Honest models one agent-day
	// on the given line; for Machine models one dialing session of at least
	// 40 outbound attempts; for Forwarding and Trunking one scenario.
	Generate func(r *rand.Rand, line string) Trace
	// Hides marks a machine that hides its pacing (random gaps, random
	// ring timeouts, a person's pace): its targets are detection within
	// 200 attempts, a suspect report by about the 10th and a block by
	// about the 40th, not a block within 3 (docs/rules.md).
	Hides bool
}

// Models returns every behaviour model, people first.
func Models() []Model {
	return []Model{
		{"human.manual_leads", Human, "", "a salesperson dialing a lead list by hand on a desk phone or softphone keypad", manualLeads, false},
		{"human.click_to_call", Human, "", "a click-to-call power user with a daily dial target, hanging up on many voicemail greetings", clickToCall, false},
		{"human.call_center", Human, "", "a call-centre agent dialing previewed records, with after-call work and a fixed break schedule", callCenter, false},
		{"human.receptionist", Human, "", "a receptionist answering inbound calls, with a few outbound callbacks", receptionist, false},
		{"human.callbacks", Human, "", "a salesperson returning missed calls back to back after each absence, between normal lead work", callbacks, false},
		{"human.voicemail_dropper", Human, "", "a fast click-to-call seller who hangs up on voicemail greetings 2-4 s after the answer", voicemailDropper, false},
		{"human.manual_dialer", Human, "", "a person keying numbers by hand, with published after-call work times", manualDialer, false},
		{"human.steady_seller", Human, "", "a seller making 60-100 calls a day between research and breaks", steadySeller, false},
		{"machine.power", Machine, "pacing", "a timer-driven dialer: a new attempt on the first tick of a fixed period once the line is free", powerDialer, true},
		{"machine.progressive", Machine, "pacing", "a progressive dialer: the next attempt well under a second after the last call ends", progressiveDialer, false},
		{"machine.predictive", Machine, "pacing", "a predictive dialer: 2 to 3 attempts in parallel for one agent, losers cancelled on a live answer", predictiveDialer, false},
		{"machine.jitter", Machine, "pacing", "a progressive dialer disguised with a 1 s wrap-up and random jitter between calls", jitterDialer, true},
		{"machine.sequential", Machine, "pacing", "a dialer walking sequential numbers at a human-like pace", sequentialDialer, true},
		{"machine.predictive_amd", Machine, "pacing", "a predictive dialer at a dial level of 1.2 to 3 with answering-machine detection and abandoned calls", predictiveAMD, false},
		{"machine.power_amd", Machine, "pacing", "a power dialer: one line, a random delay after each call, answering-machine detection", powerAMD, true},
		{"machine.jitter_timeout", Machine, "pacing", "a jitter dialer that also randomises its ring timeout and its answering-machine hang-up", jitterTimeout, true},
		{"machine.sequential_pace", Machine, "pacing", "a dialer walking a number block in steps of 1 to 10 at a person's pace, ring timeout randomised", sequentialPace, true},
		{"forwarding.redirect", Forwarding, "forwarding.redirect", "an inbound call the local side redirects (302), or forwards itself announcing 181 with Diversion", redirectScenario, false},
		{"forwarding.diversion", Forwarding, "forwarding.diversion", "a PBX forwarding a call to the line out again, naming the line in Diversion or History-Info", diversionScenario, false},
		{"forwarding.refer", Forwarding, "forwarding.refer", "an answered call on the line transferred out with REFER (blind or attended)", referScenario, false},
		{"forwarding.feature_code", Forwarding, "forwarding.feature_code", "a call-forward feature code dialed on the line", featureCodeScenario, false},
		{"forwarding.bridge", Forwarding, "forwarding.bridge", "an inbound call bridged by the local side to a new outbound leg on the line", bridgeScenario, false},
		{"trunking.concurrent", Trunking, "trunking.concurrent", "a PBX using the line as a trunk: two or three calls up at once", concurrentScenario, false},
		{"trunking.registrations", Trunking, "trunking.registrations", "two phones on different hosts registered to the line at once", registrationsScenario, false},
		{"honest.pbx", Honest, "", "a PBX with the line: inbound calls, internal transfers, follow-up calls, periodic re-registration", honestPBX, false},
	}
}

// ---------------------------------------------------------------------------
// Distributions.

// logn is a log-normal duration with the given median and shape, truncated
// to [lo, hi]. It is the usual fit for human task times and call lengths:
// positive, skewed, with a long tail.
type logn struct {
	median time.Duration
	sigma  float64
	lo, hi time.Duration
}

// draw redraws values outside [lo, hi] instead of clamping them, since a
// clamp piles probability on the bounds: a spike at exactly the minimum
// that no person produces and a rule could latch onto.
func (d logn) draw(r *rand.Rand) time.Duration {
	if d.median == 0 {
		return 0
	}
	for range 16 {
		v := time.Duration(float64(d.median) * math.Exp(d.sigma*r.NormFloat64()))
		if v >= d.lo && v <= d.hi {
			return v
		}
	}
	return between(r, d.lo, d.hi)
}

// between is uniform in [lo, hi].
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}

// uniformIn is a float uniform in [lo, hi).
func uniformIn(r *rand.Rand, lo, hi float64) float64 { return lo + r.Float64()*(hi-lo) }

func chance(r *rand.Rand, p float64) bool { return r.Float64() < p }

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// poisson returns arrival times of a Poisson process of the given rate per
// hour over [from, to), thinned by weight(t) in [0, 1] for a time-of-day
// profile.
func poisson(r *rand.Rand, perHour float64, from, to time.Duration, weight func(time.Duration) float64) []time.Duration {
	if perHour <= 0 {
		return nil
	}
	var out []time.Duration
	t := from
	for {
		t += time.Duration(r.ExpFloat64() / perHour * float64(time.Hour))
		if t >= to {
			return out
		}
		if weight == nil || r.Float64() < weight(t) {
			out = append(out, t)
		}
	}
}

// ---------------------------------------------------------------------------
// Numbers.

// nanp is a NANP number split into its parts, so sequential and sorted
// lists can step through it.
type nanp struct{ npa, nxx, sub int }

// randomPhone is a plausible US geographic number: NPA 201-989 without
// N11, N9X (reserved), N00 and 8YY toll-free codes; NXX 200-999 without
// N11 and 555.
func randomPhone(r *rand.Rand) nanp {
	return nanp{npa: randomNPA(r), nxx: randomNXX(r), sub: r.IntN(10000)}
}

func randomNPA(r *rand.Rand) int {
	for {
		n := 201 + r.IntN(989-201+1)
		d1, d2, d3 := n/100, n/10%10, n%10
		switch {
		case d2 == 1 && d3 == 1, d2 == 9, d2 == 0 && d3 == 0, d1 == 8 && d2 == d3:
			continue
		}
		return n
	}
}

func randomNXX(r *rand.Rand) int {
	for {
		n := 200 + r.IntN(800)
		if n%100 == 11 || n == 555 {
			continue
		}
		return n
	}
}

// String is the E.164 form, built in one allocation: the evaluation makes
// millions of these.
func (n nanp) String() string {
	var b [12]byte
	b[0], b[1] = '+', '1'
	putDigits(b[2:5], n.npa)
	putDigits(b[5:8], n.nxx)
	putDigits(b[8:12], n.sub)
	return string(b[:])
}

// national is the 10-digit national form, as dialed after a feature code.
func (n nanp) national() string { return n.String()[2:] }

func putDigits(b []byte, v int) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

// ---------------------------------------------------------------------------
// The called population: how lead lists and the network answer.

// dialOutcome is what became of an attempt, as the caller experienced it. The
// after-call work and the chance of a redial depend on it.
type dialOutcome uint8

const (
	talked         dialOutcome = iota // a conversation
	brushedOff                        // answered, over within a minute
	leftMessage                       // voicemail answered, message left
	greetingHangUp                    // voicemail answered, hung up at the greeting
	rangOut                           // no answer: the caller gave up (487) or the network did (480)
	busyLine                          // 486
	notInService                      // 404, or an intercept announcement the caller hung up on
	tookInbound                       // the last call on the line was an inbound one
	nOutcomes
)

// reached is what an attempt reaches, before the caller's behaviour.
type reached uint8

const (
	reachPerson reached = iota
	reachVoicemail
	reachNoAnswer
	reachBusy
	reachBad
)

// leadMix is the share of attempts reaching each kind of callee; the rest
// ring unanswered with no voicemail.
type leadMix struct{ live, vm, busy, bad float64 }

func (m leadMix) draw(r *rand.Rand) reached {
	x := r.Float64()
	switch {
	case x < m.live:
		return reachPerson
	case x < m.live+m.vm:
		return reachVoicemail
	case x < m.live+m.vm+m.busy:
		return reachBusy
	case x < m.live+m.vm+m.busy+m.bad:
		return reachBad
	}
	return reachNoAnswer
}

// The network and the called people, shared by every model since humans
// and machines call the same population.
var (
	// People pick up after 2-4 rings of the US 6 s ring cycle.
	answerRing = logn{9 * time.Second, 0.45, 2 * time.Second, 28 * time.Second}
	// A no-answer timer sends the call to voicemail after 4-5 rings.
	voicemailRing = func(r *rand.Rand) time.Duration {
		if chance(r, 0.2) { // declined, or the phone is off: voicemail at once
			return between(r, 2*time.Second, 10*time.Second)
		}
		return between(r, 18*time.Second, 32*time.Second)
	}
	greeting      = func(r *rand.Rand) time.Duration { return between(r, 6*time.Second, 20*time.Second) }
	messageLength = logn{25 * time.Second, 0.4, 8 * time.Second, 60 * time.Second}
	hearGreeting  = logn{4 * time.Second, 0.5, 1500 * time.Millisecond, 15 * time.Second}
	brushOffTalk  = logn{20 * time.Second, 0.6, 4 * time.Second, 60 * time.Second}
)

// earlyStatus is the provisional response of an outbound call that rings for
// more than a second: 183 with early media from most PSTN gateways, 180
// from the rest.
func earlyStatus(r *rand.Rand, ring time.Duration) int {
	if ring <= 1200*time.Millisecond {
		return 0
	}
	if chance(r, 0.7) {
		return 183
	}
	return 180
}

// hangUpAt is when a call leaves the line: the BYE of an answered call, the
// final response or CANCEL of any other.
func hangUpAt(c Call) time.Duration {
	if c.Status == 200 {
		return c.Start + c.Ring + c.Talk
	}
	return c.Start + c.Ring
}

// ---------------------------------------------------------------------------
// People.

// habits is how one person works the phone on one day. The models draw a
// person per trace, so that days differ as people and lists do.
type habits struct {
	list     leadMix
	patience logn    // how long they let an unanswered call ring
	leaveVM  float64 // chance they leave a message when voicemail answers
	brushOff float64 // share of live answers over within a minute
	talk     logn    // a real conversation
	notes    [nOutcomes]logn
	// lookup is the time to pick the next lead and get to the dial button:
	// reading the record, or a click.
	lookup logn
	keypad bool // the number is typed digit by digit
	// redial is the chance of calling the same number again at once after
	// each outcome; redialGap the time from hang-up to that INVITE.
	redial    [nOutcomes]float64
	redialGap logn
	// distract is the chance that a gap holds an interruption (a colleague,
	// an e-mail, a text) of length distraction.
	distract    float64
	distraction logn
	retry       float64 // chance an unanswered lead is requeued for later today
	quota       int     // a daily dial target; 0: none
	// callback, when set, is how the person returns missed calls, and
	// callbackPick the time from ready to the INVITE (a tap on the list).
	callback     *habits
	callbackPick logn
	// inboundTalk is the length of answered inbound calls.
	inboundTalk func(*rand.Rand) time.Duration
	// dropGreeting, when set, is when the person hangs up on a voicemail
	// greeting instead of hearGreeting.
	dropGreeting func(*rand.Rand) time.Duration
}

// greetingHangUp is when the person hangs up on a voicemail greeting.
func (h *habits) greetingHangUp(r *rand.Rand) time.Duration {
	if h.dropGreeting != nil {
		return h.dropGreeting(r)
	}
	return hearGreeting.draw(r)
}

// byeOf says who ends an answered call, the callee with calleeShare,
// decided by the low digits (nanoseconds) of its talk time, already drawn:
// a draw of its own would shift every later draw of the trace, and with
// them the figures docs/eval-models.md documents for each model.
func byeOf(talk time.Duration, calleeShare float64) Party {
	if float64(talk%1000)/1000 < calleeShare {
		return ByeCallee
	}
	return ByeCaller
}

// digits is the time to key a 10-digit number (11 with the leading 1) read
// off a screen and send it: 0.35-0.7 s a digit, then the dial-plan match,
// the Send key or the inter-digit timeout.
func digits(r *rand.Rand) time.Duration {
	n := 10
	if chance(r, 0.3) {
		n = 11
	}
	d := time.Duration(n) * between(r, 350*time.Millisecond, 700*time.Millisecond)
	if chance(r, 0.5) {
		return d + between(r, 100*time.Millisecond, 500*time.Millisecond)
	}
	return d + between(r, 500*time.Millisecond, 4*time.Second)
}

// dial is one outbound attempt by a person starting at start.
func (h *habits) dial(r *rand.Rand, line, remote string, start time.Duration) (Call, dialOutcome) {
	c := Call{Start: start, Direction: detect.Outbound, Line: line, Remote: remote}
	o := h.ring(r, &c)
	c.Early = earlyStatus(r, c.Ring)
	if c.Status == 404 || c.Status == 486 {
		c.Early = 0
	}
	return c, o
}

// ring fills the response side of an attempt: who answers, and what the
// caller does about it.
func (h *habits) ring(r *rand.Rand, c *Call) dialOutcome {
	patience := h.patience.draw(r)
	switch h.list.draw(r) {
	case reachPerson:
		ring := answerRing.draw(r)
		if ring > patience {
			return giveUp(c, patience)
		}
		c.Ring, c.Status = ring, 200
		if chance(r, h.brushOff) {
			c.Talk = brushOffTalk.draw(r)
			c.Bye = byeOf(c.Talk, 0.6)
			return brushedOff
		}
		c.Talk = h.talk.draw(r)
		c.Bye = byeOf(c.Talk, 0.5)
		return talked
	case reachVoicemail:
		ring := voicemailRing(r)
		if ring > patience {
			return giveUp(c, patience)
		}
		c.Ring, c.Status = ring, 200
		if chance(r, h.leaveVM) {
			c.Talk = greeting(r) + messageLength.draw(r)
			return leftMessage
		}
		c.Talk = h.greetingHangUp(r)
		return greetingHangUp
	case reachBusy:
		c.Ring, c.Status = between(r, 300*time.Millisecond, 3*time.Second), 486
		return busyLine
	case reachBad:
		if chance(r, 0.6) {
			c.Ring, c.Status = between(r, 300*time.Millisecond, 2500*time.Millisecond), 404
		} else { // an intercept announcement as early media; the caller hangs up
			c.Ring, c.Status = between(r, 3*time.Second, 12*time.Second), 487
		}
		return notInService
	}
	if network := between(r, 30*time.Second, 60*time.Second); network < patience {
		c.Ring, c.Status = network, 480
		return rangOut
	}
	return giveUp(c, patience)
}

func giveUp(c *Call, after time.Duration) dialOutcome {
	c.Ring, c.Status = after, 487
	return rangOut
}

// ---------------------------------------------------------------------------
// The agent-day.

// absence is a stretch of the day away from the phone.
type absence struct{ from, to time.Duration }

// dayPlan shapes an agent-day: its length, lunch, breaks, and blocks of
// other work (meetings, e-mail, CRM) when no calls are made.
type dayPlan struct {
	length         [2]time.Duration
	firstCall      [2]time.Duration
	lunchAt        [2]time.Duration
	lunchFor       [2]time.Duration
	breakFor       [2]time.Duration
	otherWork      [2]int
	otherFor       logn
	inboundPerHour [2]float64
	inboundProfile func(time.Duration) float64
}

// officeDay is the plan of an office worker on the phone.
var officeDay = dayPlan{
	length:         [2]time.Duration{7 * time.Hour, 9 * time.Hour},
	firstCall:      [2]time.Duration{2 * time.Minute, 20 * time.Minute},
	lunchAt:        [2]time.Duration{3 * time.Hour, 4*time.Hour + 30*time.Minute},
	lunchFor:       [2]time.Duration{30 * time.Minute, 60 * time.Minute},
	breakFor:       [2]time.Duration{10 * time.Minute, 20 * time.Minute},
	otherWork:      [2]int{2, 5},
	otherFor:       logn{30 * time.Minute, 0.5, 10 * time.Minute, 90 * time.Minute},
	inboundPerHour: [2]float64{0.2, 1.0},
}

// agentDay is one simulated agent-day on a single line: a single-line phone
// has one call at a time, so every call starts after the last one ended.
type agentDay struct {
	r      *rand.Rand
	line   string
	h      *habits
	end    time.Duration // log-off: no new call starts after it
	away   []absence     // sorted, disjoint
	arrive []time.Duration
	calls  []Call
	free   time.Duration // when the line is next free

	lastRemote string
	redials    int
	outbound   int
	missed     []string // callers whose calls rang out here, oldest first
	newest     bool     // missed calls are returned newest first
	retry      []queued
	sorted     absence // a block dialing a list sorted by number
	cursor     nanp
}

type queued struct {
	at     time.Duration
	remote string
}

func newAgentDay(r *rand.Rand, line string, h *habits, p dayPlan) *agentDay {
	d := &agentDay{r: r, line: line, h: h, end: between(r, p.length[0], p.length[1])}
	d.away = p.absences(r, d.end)
	rate := uniformIn(r, p.inboundPerHour[0], p.inboundPerHour[1])
	d.arrive = poisson(r, rate, 0, d.end, p.inboundProfile)
	d.calls = make([]Call, 0, 64)
	return d
}

// absences lays out the day's time away from the phone: before the first
// call, two short breaks, lunch, and blocks of other work.
func (p dayPlan) absences(r *rand.Rand, end time.Duration) []absence {
	add := func(s []absence, from, length time.Duration) []absence {
		if from >= end {
			return s
		}
		return append(s, absence{from, min(from+length, end)})
	}
	spans := make([]absence, 0, 8)
	spans = add(spans, 0, between(r, p.firstCall[0], p.firstCall[1]))
	lunch := between(r, p.lunchAt[0], p.lunchAt[1])
	lunchEnd := lunch + between(r, p.lunchFor[0], p.lunchFor[1])
	spans = add(spans, lunch, lunchEnd-lunch)
	if p.breakFor[1] > 0 {
		spans = add(spans, between(r, lunch/2-30*time.Minute, lunch/2+30*time.Minute), between(r, p.breakFor[0], p.breakFor[1]))
		spans = add(spans, lunchEnd+between(r, 90*time.Minute, 150*time.Minute), between(r, p.breakFor[0], p.breakFor[1]))
	}
	for range p.otherWork[0] + r.IntN(p.otherWork[1]-p.otherWork[0]+1) {
		spans = add(spans, between(r, 0, end), p.otherFor.draw(r))
	}
	return mergeSpans(spans)
}

func mergeSpans(s []absence) []absence {
	slices.SortFunc(s, func(a, b absence) int { return cmp.Compare(a.from, b.from) })
	out := s[:0]
	for _, x := range s {
		if n := len(out); n > 0 && x.from <= out[n-1].to {
			out[n-1].to = max(out[n-1].to, x.to)
			continue
		}
		out = append(out, x)
	}
	return out
}

// awayAt reports the absence covering t, if any.
func (d *agentDay) awayAt(t time.Duration) (absence, bool) {
	for _, s := range d.away {
		if t >= s.from && t < s.to {
			return s, true
		}
	}
	return absence{}, false
}

// resume moves a planned start out of an absence: back at the desk, the
// person prepares again before dialing.
func (d *agentDay) resume(t, prep time.Duration) time.Duration {
	for {
		s, away := d.awayAt(t)
		if !away {
			return t
		}
		t = s.to + prep
	}
}

func (d *agentDay) place(c Call) {
	d.calls = append(d.calls, c)
	d.free = max(d.free, hangUpAt(c))
}

// takeInbound puts on the line the inbound calls arriving up to t. A call
// arriving while the line is busy never reaches the device (the edge sends
// it to voicemail: a single-line phone has no second call); one arriving
// while the person is away rings out here and joins the missed calls; any
// other is answered. It reports whether one was answered, so that the
// caller plans again from its end.
func (d *agentDay) takeInbound(t time.Duration) bool {
	for len(d.arrive) > 0 && d.arrive[0] <= t {
		at := d.arrive[0]
		d.arrive = d.arrive[1:]
		if at < d.free {
			continue
		}
		c := Call{Start: at, Direction: detect.Inbound, Line: d.line, Remote: randomPhone(d.r).String(), Early: 180}
		c.Ring, c.Status = answerRing.draw(d.r), 200
		if s, away := d.awayAt(at); away {
			// The caller hangs up, or the edge's no-answer timer takes the
			// call to voicemail: either way the device sees a CANCEL.
			c.Ring, c.Status = between(d.r, 6*time.Second, 30*time.Second), 487
			if at+c.Ring > s.to { // back at the desk in time to pick up
				c.Ring, c.Status = s.to-at+between(d.r, time.Second, 4*time.Second), 200
			}
		}
		if c.Status == 487 {
			d.place(c)
			d.missed = append(d.missed, c.Remote)
			continue
		}
		c.Talk = d.h.inboundTalk(d.r)
		c.Bye = byeOf(c.Talk, 0.5)
		d.place(c)
		return true
	}
	return false
}

// numberSource says where the next number comes from.
type numberSource uint8

const (
	srcFresh numberSource = iota
	srcRedial
	srcRequeued
	srcMissed
)

// nextAttempt is the next outbound attempt: whom, and how long after the line
// goes free the INVITE leaves.
type nextAttempt struct {
	remote string
	gap    time.Duration
	from   numberSource
	index  int // into retry or missed
}

// work runs the day's outbound calling, taking inbound calls as they come.
func (d *agentDay) work(last dialOutcome) {
	for d.h.quota == 0 || d.outbound < d.h.quota {
		p := d.next(last)
		start := d.resume(d.free+p.gap, p.gap)
		if d.takeInbound(start) {
			last = tookInbound
			continue
		}
		if start < d.free { // a missed call still ringing: plan again from its end
			continue
		}
		if start >= d.end {
			break
		}
		h := d.h
		if p.from == srcMissed {
			h = d.h.callback
		}
		c, o := h.dial(d.r, d.line, p.remote, start)
		d.place(c)
		d.commit(p, o)
		last = o
	}
	d.takeInbound(d.end)
}

// next decides the next attempt after an outcome: an immediate redial, a
// missed call to return, a lead due again, or a fresh lead.
func (d *agentDay) next(last dialOutcome) nextAttempt {
	r, h := d.r, d.h
	if d.redials < 2 && chance(r, h.redial[last]) {
		gap := h.redialGap.draw(r)
		if last == notInService { // suspecting a misdial, they key it again
			gap = digits(r)
		}
		return nextAttempt{remote: d.lastRemote, gap: gap, from: srcRedial}
	}
	gap := h.notes[last].draw(r)
	if chance(r, h.distract) {
		gap += h.distraction.draw(r)
	}
	if h.callback != nil && len(d.missed) > 0 {
		i := 0
		if d.newest {
			i = len(d.missed) - 1
		}
		return nextAttempt{remote: d.missed[i], gap: gap + h.callbackPick.draw(r), from: srcMissed, index: i}
	}
	gap += h.lookup.draw(r)
	if h.keypad {
		gap += digits(r)
	}
	at := d.free + gap
	for i, q := range d.retry {
		if q.at <= at {
			return nextAttempt{remote: q.remote, gap: gap, from: srcRequeued, index: i}
		}
	}
	return nextAttempt{remote: d.freshNumber(at), gap: gap, from: srcFresh}
}

// freshNumber is the next lead: a random number, or the next entry of a
// list sorted by number when dialing one.
func (d *agentDay) freshNumber(at time.Duration) string {
	if at < d.sorted.from || at >= d.sorted.to {
		return randomPhone(d.r).String()
	}
	// Callable numbers in a sorted exchange list are a few percent of the
	// block: geometric steps with a mean of about 15.
	d.cursor.sub += 1 + int(math.Log(1-d.r.Float64())/math.Log(1-1.0/15))
	if d.cursor.sub > 9999 {
		d.cursor = nanp{d.cursor.npa, randomNXX(d.r), d.r.IntN(500)}
	}
	return d.cursor.String()
}

// commit books an attempt just placed.
func (d *agentDay) commit(p nextAttempt, o dialOutcome) {
	d.outbound++
	switch p.from {
	case srcRedial:
		d.redials++
	case srcRequeued:
		d.retry = slices.Delete(d.retry, p.index, p.index+1)
		d.redials = 0
	case srcMissed:
		d.missed = slices.Delete(d.missed, p.index, p.index+1)
		d.redials = 0
	default:
		d.redials = 0
	}
	d.lastRemote = p.remote
	if p.from != srcMissed && (o == rangOut || o == greetingHangUp || o == busyLine) && chance(d.r, d.h.retry) {
		d.retry = append(d.retry, queued{d.free + between(d.r, time.Hour, 3*time.Hour), p.remote})
	}
}

// trace wraps up a day.
func (d *agentDay) trace(model string, class Class, regs []Register) Trace {
	return Trace{Model: model, Class: class, Lines: []string{d.line}, Calls: d.calls, Registers: regs}
}

// ---------------------------------------------------------------------------
// Registrations.

// phoneRegistrations is a phone registering the line at the start of the
// day and refreshing before its binding expires, always with the same
// Contact. With restart > 0 that is the chance the application restarts
// once during the day on a new local port (a softphone), sometimes without
// removing its old binding first (a crash, a laptop put to sleep).
func phoneRegistrations(r *rand.Rand, line string, end time.Duration, restart float64) []Register {
	host := "192.0.2." + strconv.Itoa(10+r.IntN(240))
	port := 5060 + 2*r.IntN(2)
	if restart > 0 {
		port = 49152 + r.IntN(16384) // softphones bind an ephemeral port
	}
	expires := []int{300, 600, 1800, 3600}[r.IntN(4)]
	refresh := uniformIn(r, 0.5, 0.9)
	restartAt := time.Duration(-1)
	if chance(r, restart) {
		restartAt = between(r, time.Hour, end-time.Hour)
	}
	regs := make([]Register, 0, 16)
	for t := between(r, 0, 2*time.Minute); t < end; {
		if restartAt >= 0 && t >= restartAt {
			if chance(r, 0.5) { // a clean exit unregisters first
				regs = append(regs, registerAt(restartAt, line, host, port, 0))
			}
			port = 49152 + r.IntN(16384)
			t, restartAt = restartAt+between(r, 5*time.Second, 10*time.Minute), -1
		}
		regs = append(regs, registerAt(t, line, host, port, expires))
		t += secs(float64(expires)*refresh) + between(r, 0, 200*time.Millisecond)
	}
	return regs
}

func registerAt(at time.Duration, line, host string, port, expires int) Register {
	hp := host + ":" + strconv.Itoa(port)
	return Register{At: at, Line: line, Contact: "sip:" + line + "@" + hp, Expires: expires, Source: hp}
}

// ---------------------------------------------------------------------------
// Human models.

// sales is the shared part of a salesperson calling purchased B2C leads.
func sales(r *rand.Rand) *habits {
	h := &habits{
		list: leadMix{
			live: uniformIn(r, 0.08, 0.25),
			vm:   uniformIn(r, 0.30, 0.50),
			busy: uniformIn(r, 0.02, 0.05),
			bad:  uniformIn(r, 0.04, 0.12),
		},
		patience:    logn{secs(uniformIn(r, 22, 30)), 0.25, 10 * time.Second, 60 * time.Second},
		leaveVM:     uniformIn(r, 0.3, 0.8),
		brushOff:    0.35,
		talk:        logn{secs(uniformIn(r, 150, 300)), 0.7, time.Minute, 45 * time.Minute},
		lookup:      logn{secs(uniformIn(r, 20, 45)), 0.7, 3 * time.Second, 5 * time.Minute},
		keypad:      true,
		redialGap:   logn{4 * time.Second, 0.45, 1500 * time.Millisecond, 20 * time.Second},
		distract:    0.08,
		distraction: logn{2 * time.Minute, 0.8, 20 * time.Second, 20 * time.Minute},
		retry:       0.15,
	}
	h.notes = [nOutcomes]logn{
		talked:         {45 * time.Second, 0.8, 5 * time.Second, 10 * time.Minute},
		brushedOff:     {10 * time.Second, 0.6, 2 * time.Second, time.Minute},
		leftMessage:    {10 * time.Second, 0.6, 2 * time.Second, 90 * time.Second},
		greetingHangUp: {4 * time.Second, 0.6, time.Second, 30 * time.Second},
		rangOut:        {4 * time.Second, 0.6, time.Second, 30 * time.Second},
		busyLine:       {4 * time.Second, 0.6, time.Second, 30 * time.Second},
		notInService:   {4 * time.Second, 0.6, time.Second, 30 * time.Second},
		tookInbound:    {30 * time.Second, 0.8, 3 * time.Second, 10 * time.Minute},
	}
	h.redial = [nOutcomes]float64{greetingHangUp: 0.08, rangOut: 0.12, busyLine: 0.35, notInService: 0.10}
	h.inboundTalk = func(r *rand.Rand) time.Duration { return h.talk.draw(r) }
	return h
}

func manualLeads(r *rand.Rand, line string) Trace {
	h := sales(r)
	d := newAgentDay(r, line, h, officeDay)
	if chance(r, 0.1) { // circle prospecting from a directory sorted by number
		from := between(r, d.end/3, d.end-time.Hour)
		d.sorted = absence{from, from + between(r, 45*time.Minute, 90*time.Minute)}
		d.cursor = nanp{randomNPA(r), randomNXX(r), r.IntN(3000)}
	}
	d.work(tookInbound)
	return d.trace("human.manual_leads", Human, phoneRegistrations(r, line, d.end, 0))
}

func clickToCall(r *rand.Rand, line string) Trace { return clickToCallDay(r, line, nil) }

// clickToCallDay is a click-to-call user's day; tune, when set, changes
// the person's habits before the day starts.
func clickToCallDay(r *rand.Rand, line string, tune func(*habits)) Trace {
	h := sales(r)
	h.list = leadMix{
		live: uniformIn(r, 0.05, 0.15),
		vm:   uniformIn(r, 0.40, 0.60),
		busy: uniformIn(r, 0.01, 0.04),
		bad:  uniformIn(r, 0.03, 0.10),
	}
	h.patience = logn{secs(uniformIn(r, 18, 26)), 0.25, 12 * time.Second, 45 * time.Second}
	h.leaveVM = uniformIn(r, 0.1, 0.35)
	h.keypad = false
	// From hang-up to the click on the next lead: the CRM shows it at once.
	h.lookup = logn{secs(uniformIn(r, 3.5, 8)), 0.5, 1200 * time.Millisecond, time.Minute}
	h.notes = [nOutcomes]logn{
		talked:      {30 * time.Second, 0.8, 5 * time.Second, 5 * time.Minute},
		brushedOff:  {6 * time.Second, 0.6, 1500 * time.Millisecond, 40 * time.Second},
		leftMessage: {5 * time.Second, 0.6, time.Second, 40 * time.Second},
		tookInbound: {20 * time.Second, 0.8, 3 * time.Second, 5 * time.Minute},
	}
	h.redial = [nOutcomes]float64{greetingHangUp: 0.10, rangOut: 0.10, busyLine: 0.30}
	h.redialGap = logn{3 * time.Second, 0.45, 1200 * time.Millisecond, 15 * time.Second}
	h.distract = 0.04
	h.distraction = logn{90 * time.Second, 0.8, 15 * time.Second, 15 * time.Minute}
	h.quota = 150 + r.IntN(151)
	if tune != nil {
		tune(h)
	}
	day := officeDay
	day.otherWork = [2]int{0, 2}
	d := newAgentDay(r, line, h, day)
	d.work(tookInbound)
	return d.trace("human.click_to_call", Human, phoneRegistrations(r, line, d.end, 0.3))
}

// callCentreShift is a US call-centre shift: 8-8.5 hours with two paid
// 15-minute breaks and a 30-minute lunch, and sometimes a coaching session.
var callCentreShift = dayPlan{
	length:         [2]time.Duration{8 * time.Hour, 8*time.Hour + 30*time.Minute},
	firstCall:      [2]time.Duration{3 * time.Minute, 10 * time.Minute},
	lunchAt:        [2]time.Duration{3*time.Hour + 30*time.Minute, 4*time.Hour + 30*time.Minute},
	lunchFor:       [2]time.Duration{30 * time.Minute, 32 * time.Minute},
	breakFor:       [2]time.Duration{14 * time.Minute, 17 * time.Minute},
	otherWork:      [2]int{0, 1},
	otherFor:       logn{20 * time.Minute, 0.3, 10 * time.Minute, 45 * time.Minute},
	inboundPerHour: [2]float64{0, 0.5},
}

func callCenter(r *rand.Rand, line string) Trace {
	h := sales(r)
	h.list = leadMix{
		live: uniformIn(r, 0.12, 0.30),
		vm:   uniformIn(r, 0.30, 0.45),
		busy: uniformIn(r, 0.02, 0.05),
		bad:  uniformIn(r, 0.03, 0.08),
	}
	// The centre's no-answer policy: hang up at about 25 s; the FCC's
	// minimum for telemarketing calls is 15 s or 4 rings.
	h.patience = logn{secs(uniformIn(r, 22, 28)), 0.15, 15 * time.Second, 40 * time.Second}
	h.leaveVM = uniformIn(r, 0.2, 0.5)
	h.brushOff = 0.3
	h.talk = logn{secs(uniformIn(r, 210, 360)), 0.6, time.Minute, 40 * time.Minute}
	// Preview: the record is on screen; read it, click dial.
	h.lookup = logn{secs(uniformIn(r, 8, 20)), 0.6, 2 * time.Second, 2 * time.Minute}
	h.keypad = false
	// After-call work: notes and a disposition code after every call.
	acw := secs(uniformIn(r, 30, 75))
	h.notes = [nOutcomes]logn{
		talked:         {acw, 0.5, 8 * time.Second, 5 * time.Minute},
		brushedOff:     {15 * time.Second, 0.5, 4 * time.Second, 90 * time.Second},
		leftMessage:    {10 * time.Second, 0.5, 3 * time.Second, time.Minute},
		greetingHangUp: {6 * time.Second, 0.5, 1500 * time.Millisecond, 40 * time.Second},
		rangOut:        {6 * time.Second, 0.5, 1500 * time.Millisecond, 40 * time.Second},
		busyLine:       {6 * time.Second, 0.5, 1500 * time.Millisecond, 40 * time.Second},
		notInService:   {6 * time.Second, 0.5, 1500 * time.Millisecond, 40 * time.Second},
		tookInbound:    {acw, 0.5, 8 * time.Second, 5 * time.Minute},
	}
	h.redial = [nOutcomes]float64{rangOut: 0.03, busyLine: 0.03}
	h.redialGap = logn{5 * time.Second, 0.45, 1500 * time.Millisecond, 20 * time.Second}
	h.distract = 0.03
	h.retry = 0.1
	d := newAgentDay(r, line, h, callCentreShift)
	d.work(tookInbound)
	return d.trace("human.call_center", Human, phoneRegistrations(r, line, d.end, 0))
}

// returner is how people return calls: those who called answer more often
// and talk shorter; messages are usually left.
func returner(r *rand.Rand) *habits {
	cb := sales(r)
	cb.list = leadMix{
		live: uniformIn(r, 0.35, 0.55),
		vm:   uniformIn(r, 0.35, 0.50),
		busy: uniformIn(r, 0.01, 0.04),
		bad:  uniformIn(r, 0, 0.01),
	}
	cb.leaveVM = 0.8
	cb.brushOff = 0.2
	cb.talk = logn{2 * time.Minute, 0.8, 20 * time.Second, 30 * time.Minute}
	return cb
}

func callbacks(r *rand.Rand, line string) Trace {
	h := sales(r)
	h.callback = returner(r)
	h.callback.notes = h.notes
	// A tap on the missed-call list or the voicemail entry.
	h.callbackPick = logn{secs(uniformIn(r, 3, 7)), 0.5, 1500 * time.Millisecond, 30 * time.Second}
	day := officeDay
	day.inboundPerHour = [2]float64{1.5, 4}
	d := newAgentDay(r, line, h, day)
	d.newest = chance(r, 0.5)
	// The morning's list: calls and voicemails that came in overnight.
	for range 3 + r.IntN(10) {
		d.missed = append(d.missed, randomPhone(r).String())
	}
	d.work(tookInbound)
	return d.trace("human.callbacks", Human, phoneRegistrations(r, line, d.end, 0))
}

// busyHours weighs inbound calls to a business over the day: a mid-morning
// peak, a lunchtime dip and an early-afternoon peak, from the start of an
// 8-hour day.
func busyHours(t time.Duration) float64 {
	w := [...]float64{0.6, 1.0, 0.9, 0.6, 0.5, 0.9, 0.8, 0.6, 0.4, 0.3}
	i := int(t / time.Hour)
	if i >= len(w) {
		return 0.3
	}
	return w[i]
}

func receptionist(r *rand.Rand, line string) Trace {
	h := sales(r)
	h.callback = returner(r)
	h.callback.notes = h.notes
	h.callbackPick = logn{8 * time.Second, 0.6, 2 * time.Second, time.Minute}
	// Half the calls the receptionist handles; the other half are
	// transferred inside the PBX, and the dialog just continues.
	h.inboundTalk = func(r *rand.Rand) time.Duration {
		if chance(r, 0.55) {
			return logn{50 * time.Second, 0.7, 8 * time.Second, 10 * time.Minute}.draw(r)
		}
		return logn{4 * time.Minute, 0.8, 30 * time.Second, 40 * time.Minute}.draw(r)
	}
	day := officeDay
	day.otherWork = [2]int{0, 1}
	day.otherFor = logn{10 * time.Minute, 0.5, 5 * time.Minute, 30 * time.Minute}
	day.inboundProfile = busyHours
	volume := uniformIn(r, 40, 120) // calls a day
	day.inboundPerHour = [2]float64{volume / 8 / 0.7, volume / 8 / 0.7}
	d := newAgentDay(r, line, h, day)
	d.answerDesk(0.05, 0.05, 0.5)
	return d.trace("human.receptionist", Human, phoneRegistrations(r, line, d.end, 0))
}

// answerDesk runs an inbound-driven day: answer what comes, return missed
// calls when back, and now and then call someone back a few minutes after
// a call. missAtDesk is the chance of missing a call while at the desk,
// followUp the chance an answered call leads to an outbound call later,
// callBack the chance a missed call is returned (not all are: spam,
// robocalls, callers who try again themselves).
func (d *agentDay) answerDesk(missAtDesk, followUp, callBack float64) {
	r := d.r
	var todo []queued
	byTime := func(a, b queued) int { return cmp.Compare(a.at, b.at) }
	for {
		for _, m := range d.missed { // back at the desk: return missed calls first
			if chance(r, callBack) {
				todo = append(todo, queued{d.free, m})
			}
		}
		d.missed = d.missed[:0]
		slices.SortStableFunc(todo, byTime)
		if len(todo) > 0 {
			prep := d.h.callbackPick.draw(r)
			start := d.resume(max(todo[0].at, d.free+prep), prep)
			switch {
			case start >= d.end:
				todo = todo[:0]
			case len(d.arrive) == 0 || d.arrive[0] > start:
				c, _ := d.h.callback.dial(r, d.line, todo[0].remote, start)
				d.place(c)
				todo = todo[1:]
				continue
			}
		}
		if len(d.arrive) == 0 {
			return
		}
		at := d.arrive[0]
		if at >= d.free && chance(r, missAtDesk) { // away from the desk a moment
			d.away = mergeSpans(append(d.away, absence{at, at + time.Minute}))
		}
		if d.takeInbound(at) && chance(r, followUp) {
			q := queued{d.free + between(r, 2*time.Minute, 15*time.Minute), d.calls[len(d.calls)-1].Remote}
			if chance(r, 0.5) { // someone else: a colleague's client, a supplier
				q.remote = randomPhone(r).String()
			}
			todo = append(todo, q)
		}
	}
}

// ---------------------------------------------------------------------------
// Machines.

// autoDialer is one machine session's settings, drawn once per session.
type autoDialer struct {
	list    leadMix
	timeout time.Duration // the no-answer timeout: the CANCEL comes then
	// dropMessage is what the answering-machine detection does: 0 hangs
	// up on detection; else it waits for the beep and plays a recorded
	// message of this length.
	dropMessage time.Duration
	talk        logn // a live answer connected to the agent
	line        string
	// amdAt, when set, is when answering-machine detection hangs up on a
	// machine, after the answer (instead of U(2 s, 4.5 s)).
	amdAt func(*rand.Rand) time.Duration
	// ringTimeout, when set, draws the no-answer timeout per call
	// (instead of the fixed timeout).
	ringTimeout func(*rand.Rand) time.Duration
}

func newAutoDialer(r *rand.Rand, line string) *autoDialer {
	d := &autoDialer{
		list: leadMix{
			live: uniformIn(r, 0.08, 0.25),
			vm:   uniformIn(r, 0.30, 0.50),
			busy: uniformIn(r, 0.02, 0.05),
			bad:  uniformIn(r, 0.04, 0.12),
		},
		// Dialers are configured in whole seconds.
		timeout: time.Duration(18+r.IntN(18)) * time.Second,
		talk:    logn{secs(uniformIn(r, 60, 240)), 0.8, 5 * time.Second, 30 * time.Minute},
		line:    line,
	}
	if chance(r, 0.4) {
		d.dropMessage = time.Duration(15+r.IntN(21)) * time.Second
	}
	return d
}

// schedNoise is a machine's scheduling noise: milliseconds.
func schedNoise(r *rand.Rand) time.Duration { return between(r, 0, 30*time.Millisecond) }

// dial is one attempt by a machine: the outcome of the list meets the
// dialer's fixed timeout and answering-machine handling.
func (m *autoDialer) dial(r *rand.Rand, remote string, start time.Duration) (Call, reached) {
	c := Call{Start: start, Direction: detect.Outbound, Line: m.line, Remote: remote}
	cancelAt := m.timeout + schedNoise(r)
	if m.ringTimeout != nil {
		cancelAt = m.ringTimeout(r)
	}
	kind := m.list.draw(r)
	switch kind {
	case reachPerson:
		if ring := answerRing.draw(r); ring < cancelAt {
			c.Ring, c.Status, c.Talk = ring, 200, m.talk.draw(r)
			c.Bye = byeOf(c.Talk, 0.5)
		} else {
			c.Ring, c.Status = cancelAt, 487
		}
	case reachVoicemail:
		if ring := voicemailRing(r); ring < cancelAt {
			c.Ring, c.Status = ring, 200
			if m.amdAt != nil {
				c.Talk = m.amdAt(r)
			} else {
				c.Talk = between(r, 2*time.Second, 4500*time.Millisecond) // detection
			}
			if m.dropMessage > 0 {
				c.Talk = greeting(r) + m.dropMessage
			}
		} else {
			c.Ring, c.Status = cancelAt, 487
		}
	case reachNoAnswer:
		c.Ring, c.Status = cancelAt, 487
	case reachBusy:
		c.Ring, c.Status = between(r, 300*time.Millisecond, 3*time.Second), 486
	case reachBad:
		if chance(r, 0.7) {
			c.Ring, c.Status = between(r, 300*time.Millisecond, 2500*time.Millisecond), 404
		} else { // the tones of an intercept detected in the early media
			c.Ring, c.Status = between(r, 1500*time.Millisecond, 3*time.Second), 487
		}
	}
	c.Early = earlyStatus(r, c.Ring)
	if c.Status == 404 || c.Status == 486 {
		c.Early = 0
	}
	return c, kind
}

// sessionAttempts is the length of a session: at least 50 attempts.
func sessionAttempts(r *rand.Rand) int { return 50 + r.IntN(101) }

// hidingSession is the length of a session of a dialer that hides its
// pacing: 200-300 attempts, a few hours, since its target is detection
// within 200 attempts.
func hidingSession(r *rand.Rand) int { return 200 + r.IntN(101) }

func machineTrace(model, line string, calls []Call) Trace {
	slices.SortStableFunc(calls, func(a, b Call) int { return cmp.Compare(a.Start, b.Start) })
	return Trace{Model: model, Class: Machine, Lines: []string{line}, Calls: calls, Rule: "pacing"}
}

func powerDialer(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	period := time.Duration(5+r.IntN(56)) * time.Second
	n := hidingSession(r)
	calls := make([]Call, 0, n)
	t0 := between(r, 0, 5*time.Minute)
	free := t0
	for tick := t0; len(calls) < n; tick += period {
		if tick < free+200*time.Millisecond { // the line is still busy: skip the tick
			continue
		}
		c, _ := m.dial(r, randomPhone(r).String(), tick+schedNoise(r))
		calls = append(calls, c)
		free = hangUpAt(c)
	}
	return machineTrace("machine.power", line, calls)
}

func progressiveDialer(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	base := secs(uniformIn(r, 0.1, 0.8))
	n := sessionAttempts(r)
	calls := make([]Call, 0, n)
	t := between(r, 0, 5*time.Minute)
	for len(calls) < n {
		c, _ := m.dial(r, randomPhone(r).String(), t)
		calls = append(calls, c)
		gap := base + between(r, -50*time.Millisecond, 50*time.Millisecond)
		t = hangUpAt(c) + max(gap, 30*time.Millisecond)
	}
	return machineTrace("machine.progressive", line, calls)
}

func jitterDialer(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	jitter := jitterShape(r)
	n := hidingSession(r)
	calls := make([]Call, 0, n)
	t := between(r, 0, 5*time.Minute)
	for len(calls) < n {
		c, _ := m.dial(r, randomPhone(r).String(), t)
		calls = append(calls, c)
		t = hangUpAt(c) + time.Second + jitter(r)
	}
	return machineTrace("machine.jitter", line, calls)
}

// jitterShape is the random delay a disguised dialer adds: uniform,
// exponential or normal, of a scale chosen per session.
func jitterShape(r *rand.Rand) func(*rand.Rand) time.Duration {
	scale := uniformIn(r, 2, 20)
	switch r.IntN(3) {
	case 0:
		return func(r *rand.Rand) time.Duration { return secs(r.Float64() * scale) }
	case 1:
		return func(r *rand.Rand) time.Duration { return secs(min(r.ExpFloat64()*scale/2, 3*scale)) }
	}
	return func(r *rand.Rand) time.Duration {
		return secs(max(0, scale/2+r.NormFloat64()*scale/6))
	}
}

func sequentialDialer(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	// Sequential blocks hold many unassigned numbers.
	m.list = leadMix{
		live: uniformIn(r, 0.08, 0.20),
		vm:   uniformIn(r, 0.20, 0.35),
		busy: uniformIn(r, 0.02, 0.05),
		bad:  uniformIn(r, 0.25, 0.45),
	}
	step := func(*rand.Rand) int { return 1 }
	if chance(r, 0.5) {
		k := 2 + r.IntN(9)
		step = func(r *rand.Rand) int { return 1 + r.IntN(k) }
	}
	think := logn{secs(uniformIn(r, 10, 25)), 0.6, 3 * time.Second, 3 * time.Minute}
	n := hidingSession(r)
	calls := make([]Call, 0, n)
	num := nanp{randomNPA(r), randomNXX(r), r.IntN(4000)}
	t := between(r, 0, 5*time.Minute)
	for len(calls) < n {
		c, _ := m.dial(r, num.String(), t)
		calls = append(calls, c)
		num.sub += step(r)
		t = hangUpAt(c) + think.draw(r) + digits(r)
	}
	return machineTrace("machine.sequential", line, calls)
}

func predictiveDialer(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	m.dropMessage = 0           // predictive dialers hang up on machines to keep agents busy
	three := uniformIn(r, 0, 1) // share of rounds dialing 3 lines rather than 2
	wrap := secs(uniformIn(r, 2, 15))
	lookahead := secs(uniformIn(r, 0, 8)) // dial before the agent is free
	n := sessionAttempts(r)
	calls := make([]Call, 0, n+2)
	t := between(r, 0, 5*time.Minute)
	agentFree := t
	var round [3]Call
	var kinds [3]reached
	for len(calls) < n {
		lines := 2
		if chance(r, three) {
			lines = 3
		}
		for i := range lines {
			t += time.Duration(min(i, 1)) * between(r, 20*time.Millisecond, 400*time.Millisecond)
			round[i], kinds[i] = m.dial(r, randomPhone(r).String(), t)
		}
		t, agentFree = settleRound(r, round[:lines], kinds[:lines], agentFree, wrap, lookahead)
		calls = append(calls, round[:lines]...)
	}
	return machineTrace("machine.predictive", line, calls)
}

// abandoned is a live answer no agent can take: the dialer plays the
// recorded identification and opt-out message the FCC requires within 2 s.
func abandoned(r *rand.Rand) time.Duration { return between(r, 6*time.Second, 12*time.Second) }

// silentDrop is a live answer no agent can take, hung up on without a
// message within the FTC's 2 s (dialers that do not play one).
func silentDrop(r *rand.Rand) time.Duration { return between(r, 500*time.Millisecond, 2*time.Second) }

// settleRound resolves one round of parallel attempts: the first live
// answer once the agent is free goes to the agent and the attempts still
// ringing are cancelled; a live answer while the agent is busy is
// abandoned. It returns when the next round starts and when the agent is
// next free.
func settleRound(r *rand.Rand, round []Call, kinds []reached, agentFree, wrap, lookahead time.Duration) (next, free time.Duration) {
	return settle(r, round, kinds, agentFree, wrap, lookahead, abandoned)
}

// settle is settleRound with the dialer's handling of abandoned calls.
func settle(r *rand.Rand, round []Call, kinds []reached, agentFree, wrap, lookahead time.Duration, abandon func(*rand.Rand) time.Duration) (next, free time.Duration) {
	answer := func(i int) time.Duration { return round[i].Start + round[i].Ring }
	live := func(i int) bool { return kinds[i] == reachPerson && round[i].Status == 200 }
	winner := -1
	for i := range round {
		if live(i) && answer(i) >= agentFree && (winner < 0 || answer(i) < answer(winner)) {
			winner = i
		}
	}
	cancel := time.Duration(math.MaxInt64)
	if winner >= 0 {
		cancel = answer(winner) + between(r, 50*time.Millisecond, 300*time.Millisecond)
	}
	last := time.Duration(0)
	for i := range round {
		c := &round[i]
		switch {
		case i == winner:
		case live(i) && answer(i) < cancel:
			c.Talk, c.Bye = abandon(r), ByeCaller
		case hangUpAt(*c) > cancel && !(c.Status == 200 && answer(i) < cancel):
			c.Ring, c.Status, c.Talk = cancel-c.Start, 487, 0
			c.Early = earlyStatus(r, c.Ring)
		}
		last = max(last, hangUpAt(*c))
	}
	if winner < 0 { // nobody for the agent: dial again as lines free up
		return max(last+between(r, 100*time.Millisecond, 600*time.Millisecond), agentFree-lookahead), agentFree
	}
	free = hangUpAt(round[winner]) + wrap
	return max(free-lookahead, cancel+100*time.Millisecond), free
}

// ---------------------------------------------------------------------------
// Scenarios.

// scenarioPrelude is ordinary use of the line before a scenario: none, one or two
// calls some minutes apart, so a rule must trip on the scenario itself.
func scenarioPrelude(r *rand.Rand, line string) ([]Call, time.Duration) {
	h := sales(r)
	calls := make([]Call, 0, 6)
	t := between(r, 0, 10*time.Minute)
	for range r.IntN(3) {
		var c Call
		if chance(r, 0.5) {
			c, _ = h.dial(r, line, randomPhone(r).String(), t)
		} else {
			c = Call{Start: t, Direction: detect.Inbound, Line: line, Remote: randomPhone(r).String(),
				Early: 180, Ring: answerRing.draw(r), Status: 200, Talk: h.talk.draw(r)}
		}
		calls = append(calls, c)
		t = hangUpAt(c) + between(r, 2*time.Minute, 30*time.Minute)
	}
	return calls, t
}

func scenarioTrace(model string, class Class, line string, calls []Call) Trace {
	slices.SortStableFunc(calls, func(a, b Call) int { return cmp.Compare(a.Start, b.Start) })
	return Trace{Model: model, Class: class, Lines: []string{line}, Calls: calls, Rule: model}
}

func inboundTo(line string, r *rand.Rand, at time.Duration) Call {
	return Call{Start: at, Direction: detect.Inbound, Line: line, Remote: randomPhone(r).String()}
}

var scenarioTalk = logn{3 * time.Minute, 0.8, 20 * time.Second, 30 * time.Minute}

func redirectScenario(r *rand.Rand, line string) Trace {
	calls, t := scenarioPrelude(r, line)
	c := inboundTo(line, r, t)
	switch x := r.Float64(); {
	case x < 0.5: // unconditional forward: redirected at once
		c.Ring, c.Status = between(r, 20*time.Millisecond, 300*time.Millisecond), 302
	case x < 0.75: // forward on no answer
		c.Early, c.Ring, c.Status = 180, between(r, 12*time.Second, 30*time.Second), 302
	default: // the local side forwards the call itself and says so
		c.Early, c.EarlyDiversion = 181, true
		c.Ring = between(r, 3*time.Second, 25*time.Second)
		c.Status, c.Talk = 200, scenarioTalk.draw(r)
		if chance(r, 0.2) {
			c.Status, c.Talk = 487, 0
		}
	}
	return scenarioTrace("forwarding.redirect", Forwarding, line, append(calls, c))
}

func diversionScenario(r *rand.Rand, line string) Trace {
	calls, t := scenarioPrelude(r, line)
	in := inboundTo(line, r, t)
	target := randomPhone(r).String()
	delay := between(r, 50*time.Millisecond, 500*time.Millisecond) // unconditional
	if chance(r, 0.4) {                                            // on no answer
		delay = between(r, 12*time.Second, 25*time.Second)
	}
	// The onward leg is not on a line: it presents the original caller.
	out := Call{Start: t + delay, Direction: detect.Outbound, Remote: target, From: in.Remote}
	if chance(r, 0.3) {
		out.PAI = in.Remote
	}
	switch r.IntN(3) {
	case 0:
		out.Diversion = []string{line}
		if chance(r, 0.2) { // already diverted once before reaching the line
			out.Diversion = append(out.Diversion, randomPhone(r).String())
		}
	case 1:
		out.HistoryInfo = historyInfo(line, target)
	default:
		out.Diversion = []string{line}
		out.HistoryInfo = historyInfo(line, target)
	}
	out.Ring = answerRing.draw(r)
	out.Early = earlyStatus(r, out.Ring)
	out.Status, out.Talk = 200, scenarioTalk.draw(r)
	// The caller's leg is answered when the onward leg is, and ends with it.
	in.Early = 180
	in.Ring = out.Start + out.Ring - in.Start + between(r, 10*time.Millisecond, 100*time.Millisecond)
	in.Status, in.Talk = 200, out.Talk
	return scenarioTrace("forwarding.diversion", Forwarding, line, append(calls, in, out))
}

func historyInfo(line, target string) []string {
	return []string{
		"<sip:" + line + "@pbx.example;cause=302>;index=1",
		"<sip:" + target + "@edge.example>;index=1.1",
	}
}

func referScenario(r *rand.Rand, line string) Trace {
	calls, t := scenarioPrelude(r, line)
	var c Call
	if chance(r, 0.6) {
		c = inboundTo(line, r, t)
		c.Early, c.Ring = 180, answerRing.draw(r)
	} else {
		c = Call{Start: t, Direction: detect.Outbound, Line: line, Remote: randomPhone(r).String()}
		c.Ring = answerRing.draw(r)
		c.Early = earlyStatus(r, c.Ring)
	}
	c.Status = 200
	c.ReferAfter = between(r, 5*time.Second, 3*time.Minute)
	// The transferor's dialog ends a moment after the transfer succeeds.
	c.Talk = c.ReferAfter + between(r, 500*time.Millisecond, 3*time.Second)
	if chance(r, 0.3) { // attended: a consultation call to the third party first
		answer := c.Start + c.Ring
		consult := Call{Start: answer + between(r, 10*time.Second, 2*time.Minute), Direction: detect.Outbound,
			Line: line, Remote: randomPhone(r).String(), Status: 200}
		consult.Ring = answerRing.draw(r)
		consult.Early = earlyStatus(r, consult.Ring)
		consult.Talk = between(r, 10*time.Second, time.Minute)
		c.ReferAfter = consult.Start + consult.Ring + consult.Talk - answer - between(r, time.Second, 5*time.Second)
		c.Talk = c.ReferAfter + between(r, 500*time.Millisecond, 3*time.Second)
		// A PBX with only this line consults over it: a second dialog on
		// the line. One with another trunk consults over that, unseen.
		if chance(r, 0.5) {
			calls = append(calls, consult)
		}
	}
	return scenarioTrace("forwarding.refer", Forwarding, line, append(calls, c))
}

// featureCode is a call-forward activation dial string: US vertical
// service codes (*72 unconditional, *90 busy, *92 no answer), FreePBX's
// (*52 no answer/unavailable) and 3GPP MMI codes (*21* unconditional,
// **61* no reply with a timer, **67* busy).
func featureCode(r *rand.Rand) string {
	n := randomPhone(r)
	target := n.String()
	if chance(r, 0.3) {
		target = n.national()
	}
	switch r.IntN(9) {
	case 0, 1:
		return "*72" + target
	case 2:
		return "*72"
	case 3:
		return "*21*" + target + "#"
	case 4:
		return "**21*" + target + "#"
	case 5:
		return "**61*" + target + "**20#"
	case 6:
		return "**67*" + target + "#"
	case 7:
		return []string{"*90", "*92"}[r.IntN(2)] + target
	}
	return []string{"*90", "*52", "*92"}[r.IntN(3)]
}

func featureCodeScenario(r *rand.Rand, line string) Trace {
	calls, t := scenarioPrelude(r, line)
	c := Call{Start: t, Direction: detect.Outbound, Line: line, Remote: featureCode(r)}
	switch x := r.Float64(); {
	case x < 0.7: // the feature server confirms with an announcement or stutter tone
		c.Ring, c.Status, c.Talk = between(r, 300*time.Millisecond, 2*time.Second), 200, between(r, 3*time.Second, 10*time.Second)
	case x < 0.85: // announcement as early media, then the user hangs up
		c.Early, c.Ring, c.Status = 183, between(r, 3*time.Second, 10*time.Second), 487
	default: // not offered by this network
		c.Ring, c.Status = between(r, 100*time.Millisecond, time.Second), 404
	}
	return scenarioTrace("forwarding.feature_code", Forwarding, line, append(calls, c))
}

func bridgeScenario(r *rand.Rand, line string) Trace {
	calls, t := scenarioPrelude(r, line)
	in := inboundTo(line, r, t)
	out := Call{Direction: detect.Outbound, Line: line, Remote: randomPhone(r).String(), Status: 200}
	if chance(r, 0.4) {
		out.From = in.Remote // presenting the caller
	}
	out.Ring = answerRing.draw(r)
	out.Early = earlyStatus(r, out.Ring)
	out.Talk = scenarioTalk.draw(r)
	if chance(r, 0.5) { // answered (an auto attendant, a follow-me), then bridged
		in.Ring, in.Status = between(r, 100*time.Millisecond, 2*time.Second), 200
		out.Start = in.Start + in.Ring + between(r, 500*time.Millisecond, 8*time.Second)
	} else { // still ringing locally while the outside number rings too
		in.Early = 180
		out.Start = in.Start + between(r, 200*time.Millisecond, 5*time.Second)
		in.Ring, in.Status = out.Start+out.Ring-in.Start+between(r, 10*time.Millisecond, 100*time.Millisecond), 200
	}
	// The inbound stays up as long as the bridged leg.
	in.Talk = hangUpAt(out) - (in.Start + in.Ring) + between(r, 10*time.Millisecond, 500*time.Millisecond)
	return scenarioTrace("forwarding.bridge", Forwarding, line, append(calls, in, out))
}

func concurrentScenario(r *rand.Rand, line string) Trace {
	calls, t := scenarioPrelude(r, line)
	first := r.IntN(2) == 0
	c1 := pbxCall(r, line, t, first)
	calls = append(calls, c1)
	answer := c1.Start + c1.Ring
	n := 1 + r.IntN(2) // one or two more while the first is up
	for range n {
		at := answer + between(r, 3*time.Second, c1.Talk-2*time.Second)
		calls = append(calls, pbxCall(r, line, at, chance(r, 0.5)))
	}
	return scenarioTrace("trunking.concurrent", Trunking, line, calls)
}

// pbxCall is one answered call through a PBX with several extensions.
func pbxCall(r *rand.Rand, line string, at time.Duration, inbound bool) Call {
	c := Call{Start: at, Direction: detect.Outbound, Line: line, Remote: randomPhone(r).String(), Status: 200}
	if inbound {
		c.Direction = detect.Inbound
	}
	c.Ring = answerRing.draw(r)
	c.Early = earlyStatus(r, c.Ring)
	c.Talk = logn{4 * time.Minute, 0.6, 30 * time.Second, 30 * time.Minute}.draw(r)
	return c
}

func registrationsScenario(r *rand.Rand, line string) Trace {
	end := between(r, time.Hour, 4*time.Hour)
	a := phoneRegistrations(r, line, end, 0)
	// The second phone registers while the first one's binding is live.
	first := a[0]
	at := first.At + between(r, 10*time.Second, secs(float64(first.Expires)*0.9))
	var host string
	switch r.IntN(3) {
	case 0: // a second desk phone on the LAN
		host = "192.0.2." + strconv.Itoa(10+r.IntN(240))
		for host == hostOf(first.Contact) {
			host = "192.0.2." + strconv.Itoa(10+r.IntN(240))
		}
	case 1: // a softphone on a mobile, from outside
		host = "203.0.113." + strconv.Itoa(1+r.IntN(254))
	default: // another PBX
		host = "198.51.100." + strconv.Itoa(1+r.IntN(254))
	}
	expires := []int{60, 300, 600, 3600}[r.IntN(4)]
	port := 5060 + r.IntN(2)*2
	regs := a
	for t := at; t < end; t += secs(float64(expires) * 0.8) {
		regs = append(regs, registerAt(t, line, host, port, expires))
	}
	slices.SortStableFunc(regs, func(a, b Register) int { return cmp.Compare(a.At, b.At) })
	return Trace{Model: "trunking.registrations", Class: Trunking, Lines: []string{line}, Registers: regs,
		Rule: "trunking.registrations"}
}

// hostOf is the host of a "sip:user@host:port" Contact.
func hostOf(contact string) string {
	for i := len(contact) - 1; i >= 0; i-- {
		switch contact[i] {
		case ':':
			contact = contact[:i]
		case '@':
			return contact[i+1:]
		}
	}
	return contact
}

func honestPBX(r *rand.Rand, line string) Trace {
	h := sales(r)
	h.talk = logn{2 * time.Minute, 0.8, 20 * time.Second, 30 * time.Minute}
	// An auto attendant or ring group answers; internal transfers keep the
	// dialog up, so the call is simply longer.
	h.inboundTalk = func(r *rand.Rand) time.Duration {
		return logn{3 * time.Minute, 0.9, 20 * time.Second, 40 * time.Minute}.draw(r)
	}
	h.callback = h
	h.callbackPick = logn{20 * time.Second, 0.6, 4 * time.Second, 2 * time.Minute}
	day := officeDay
	day.otherWork = [2]int{0, 0}
	day.lunchFor = [2]time.Duration{0, 0} // the PBX takes calls all day
	day.breakFor = [2]time.Duration{0, 0}
	day.inboundProfile = busyHours
	rate := uniformIn(r, 3, 10)
	day.inboundPerHour = [2]float64{rate, rate}
	d := newAgentDay(r, line, h, day)
	d.away = d.away[:1] // only the time before opening
	d.answerDesk(0, 0.3, 0.5)
	pai, rpid := chance(r, 0.5), chance(r, 0.2)
	for i := range d.calls {
		if c := &d.calls[i]; c.Direction == detect.Outbound {
			if pai {
				c.PAI = line
			}
			if rpid {
				c.RPID = line
			}
		}
	}
	return d.trace("honest.pbx", Honest, pbxRegistrations(r, line, d.end))
}

// pbxRegistrations is a PBX trunk registering and refreshing with the same
// Contact; now and then a NAT rebinding makes the refreshes arrive from a
// new source port, the Contact unchanged.
func pbxRegistrations(r *rand.Rand, line string, end time.Duration) []Register {
	host := "192.0.2." + strconv.Itoa(10+r.IntN(240))
	contact := "sip:" + line + "@" + host + ":5060"
	expires := []int{600, 900, 1800, 3600}[r.IntN(4)]
	interval := secs(max(300, float64(expires)*uniformIn(r, 0.5, 0.95)))
	sourcePort := 5060
	rebind := chance(r, 0.1)
	regs := make([]Register, 0, 32)
	for t := between(r, 0, time.Minute); t < end; t += interval + between(r, 0, 200*time.Millisecond) {
		if rebind && t > end/2 {
			sourcePort, rebind = 1024+r.IntN(64000), false
		}
		regs = append(regs, Register{At: t, Line: line, Contact: contact, Expires: expires,
			Source: host + ":" + strconv.Itoa(sourcePort)})
	}
	return regs
}

// ---------------------------------------------------------------------------
// The models of issue 15: dialers with answering-machine detection and
// random pacing, and the people they must not be mistaken for.

// amdDecision is when an answering-machine detector hangs up on a
// machine: Asterisk's app_amd decides MACHINE once the greeting has gone
// on for 1.5 s of speech after up to 2.5 s of initial silence, so at 1.8-
// 4.5 s; a share of answers it cannot classify ends at its total analysis
// time (5 s by default; campaigns set 3.5-5 s) plus the dialer's
// latency.
func amdDecision(r *rand.Rand) func(*rand.Rand) time.Duration {
	notSure := uniformIn(r, 0.1, 0.3)
	total := []time.Duration{3500 * time.Millisecond, 4 * time.Second, 5 * time.Second}[r.IntN(3)]
	return func(r *rand.Rand) time.Duration {
		if chance(r, notSure) {
			return total + schedNoise(r)
		}
		return between(r, 300*time.Millisecond, 2500*time.Millisecond) + 1500*time.Millisecond + between(r, 0, 500*time.Millisecond)
	}
}

func predictiveAMD(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	m.dropMessage = 0
	m.amdAt = amdDecision(r)
	level := uniformIn(r, 1.2, 3) // lines dialed per free agent
	wrap := secs(uniformIn(r, 2, 15))
	lookahead := secs(uniformIn(r, 0, 8))
	abandon := abandoned
	if chance(r, 0.5) {
		abandon = silentDrop
	}
	n := sessionAttempts(r)
	calls := make([]Call, 0, n+3)
	t := between(r, 0, 5*time.Minute)
	agentFree := t
	var round [3]Call
	var kinds [3]reached
	for len(calls) < n {
		lines := int(level)
		if chance(r, level-float64(lines)) {
			lines++
		}
		for i := range lines {
			t += time.Duration(min(i, 1)) * between(r, 20*time.Millisecond, 400*time.Millisecond)
			round[i], kinds[i] = m.dial(r, randomPhone(r).String(), t)
		}
		t, agentFree = settle(r, round[:lines], kinds[:lines], agentFree, wrap, lookahead, abandon)
		calls = append(calls, round[:lines]...)
	}
	return machineTrace("machine.predictive_amd", line, calls)
}

func powerAMD(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	m.amdAt = amdDecision(r)
	// Auto wrap-up, a campaign setting in whole seconds, after every call,
	// then the random delay that hides the pace.
	wrap := time.Duration(r.IntN(6)) * time.Second
	lo := secs(uniformIn(r, 0.5, 3))
	hi := lo + secs(uniformIn(r, 3, 20))
	n := hidingSession(r)
	calls := make([]Call, 0, n)
	t := between(r, 0, 5*time.Minute)
	for len(calls) < n {
		c, _ := m.dial(r, randomPhone(r).String(), t)
		calls = append(calls, c)
		t = hangUpAt(c) + wrap + between(r, lo, hi)
	}
	return machineTrace("machine.power_amd", line, calls)
}

func jitterTimeout(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	m.dropMessage = 0
	lo := secs(uniformIn(r, 15, 22))
	hi := lo + secs(uniformIn(r, 5, 15))
	m.ringTimeout = func(r *rand.Rand) time.Duration { return between(r, lo, hi) }
	m.amdAt = func(r *rand.Rand) time.Duration { return between(r, 1500*time.Millisecond, 6*time.Second) }
	jitter := jitterShape(r)
	n := hidingSession(r)
	calls := make([]Call, 0, n)
	t := between(r, 0, 5*time.Minute)
	for len(calls) < n {
		c, _ := m.dial(r, randomPhone(r).String(), t)
		calls = append(calls, c)
		t = hangUpAt(c) + time.Second + jitter(r)
	}
	return machineTrace("machine.jitter_timeout", line, calls)
}

func sequentialPace(r *rand.Rand, line string) Trace {
	m := newAutoDialer(r, line)
	m.list = leadMix{
		live: uniformIn(r, 0.08, 0.20),
		vm:   uniformIn(r, 0.20, 0.35),
		busy: uniformIn(r, 0.02, 0.05),
		bad:  uniformIn(r, 0.25, 0.45),
	}
	m.ringTimeout = func(r *rand.Rand) time.Duration { return between(r, 18*time.Second, 32*time.Second) }
	m.amdAt = amdDecision(r)
	k := 2 + r.IntN(9)
	think := logn{secs(uniformIn(r, 10, 25)), 0.6, 3 * time.Second, 3 * time.Minute}
	n := hidingSession(r)
	calls := make([]Call, 0, n)
	num := nanp{randomNPA(r), randomNXX(r), r.IntN(4000)}
	t := between(r, 0, 5*time.Minute)
	for len(calls) < n {
		c, _ := m.dial(r, num.String(), t)
		calls = append(calls, c)
		num.sub += 1 + r.IntN(k)
		t = hangUpAt(c) + think.draw(r) + digits(r)
	}
	return machineTrace("machine.sequential_pace", line, calls)
}

func voicemailDropper(r *rand.Rand, line string) Trace {
	tr := clickToCallDay(r, line, func(h *habits) {
		h.leaveVM = uniformIn(r, 0, 0.1)
		// The trap for the answering-machine signal: hung up 2-4 s into
		// the greeting, as a dialer's detector would.
		h.dropGreeting = func(r *rand.Rand) time.Duration { return between(r, 2*time.Second, 4*time.Second) }
	})
	tr.Model = "human.voicemail_dropper"
	return tr
}

func manualDialer(r *rand.Rand, line string) Trace {
	h := sales(r)
	// A printed or on-screen list: the next number is read off at once.
	h.lookup = logn{secs(uniformIn(r, 6, 15)), 0.6, 2 * time.Second, 2 * time.Minute}
	acw := secs(uniformIn(r, 25, 60))
	h.notes = [nOutcomes]logn{
		talked:         {acw, 0.6, 5 * time.Second, 5 * time.Minute},
		brushedOff:     {12 * time.Second, 0.6, 2 * time.Second, 90 * time.Second},
		leftMessage:    {10 * time.Second, 0.6, 2 * time.Second, 90 * time.Second},
		greetingHangUp: {3 * time.Second, 0.5, time.Second, 20 * time.Second},
		rangOut:        {3 * time.Second, 0.5, time.Second, 20 * time.Second},
		busyLine:       {3 * time.Second, 0.5, time.Second, 20 * time.Second},
		notInService:   {3 * time.Second, 0.5, time.Second, 20 * time.Second},
		tookInbound:    {acw, 0.6, 5 * time.Second, 5 * time.Minute},
	}
	d := newAgentDay(r, line, h, officeDay)
	d.work(tookInbound)
	return d.trace("human.manual_dialer", Human, phoneRegistrations(r, line, d.end, 0))
}

func steadySeller(r *rand.Rand, line string) Trace {
	h := sales(r)
	h.quota = 60 + r.IntN(41)
	// Research between calls: the account, the last e-mail, the CRM.
	h.lookup = logn{secs(uniformIn(r, 90, 200)), 0.7, 10 * time.Second, 15 * time.Minute}
	d := newAgentDay(r, line, h, officeDay)
	d.work(tookInbound)
	return d.trace("human.steady_seller", Human, phoneRegistrations(r, line, d.end, 0))
}
