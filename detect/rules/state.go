package rules

import (
	"hash/fnv"
	"sort"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

// liveCall is a call on a line from its INVITE until the engine hears of
// its end.
type liveCall struct {
	id       string
	dir      detect.Direction
	remote   string
	start    time.Time
	answered time.Time
}

// attempt is one outbound attempt in a line's pacing history.
type attempt struct {
	id uint64 // hash of the Call-ID (idOf), to find the attempt when its call ends
	at int64  // unix ns
	// ring is how long it rang before the caller gave up (CANCEL); 0
	// when it did not end that way, or has not ended yet.
	ring   time.Duration
	callee uint64 // the callee's digits as a number; 0 when not a number
	// gap is the time since the line's last outbound call ended, when
	// that is what the attempt followed: no call was up, and it is not a
	// redial of the previous callee.
	gap    time.Duration
	hasGap bool
}

// when is the attempt's time.
func (a *attempt) when() time.Time { return time.Unix(0, a.at) }

// idOf is the key an attempt keeps of its Call-ID: 8 bytes where the
// Call-ID itself is often 40 or more. Two Call-IDs colliding among one
// line's last few attempts would only misplace a ring time.
func idOf(callID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(callID))
	return h.Sum64()
}

// lineState is what the rules remember about one line. Its size is fixed
// but for the live calls and the contacts, both bounded by what the rules
// allow (and by pruning when they only observe).
type lineState struct {
	calls      []liveCall
	lastOutEnd time.Time

	// hist is a ring of the newest attempts, the newest at
	// hist[(nHist-1)%len(hist)]. It grows as attempts come, up to the
	// depth the policy reads (Engine.histDepth, 10 by default, at most
	// policy.MaxHistory): with ten thousand lines, a fixed ring of the
	// most any policy may read was 30 MB of a 48 MB budget.
	hist  []attempt
	nHist int
	// hour counts attempts per minute over the hour up to hourAt (a unix
	// minute): hour[m%60] is minute m's count for m in (hourAt-60,
	// hourAt]. 124 bytes where a minute stamp per counter took 960.
	hour   [60]uint16
	hourAt int32 // good until the year 6053
	// prunedAt is the unix second calls were last pruned: a line's
	// INVITEs prune at most once a second, as the limits they enforce
	// are minutes (4 bytes the alignment after hourAt left free).
	prunedAt int32

	coolUntil time.Time // pacing cool-down
	coolTrip  trip      // what tripped it

	sig signals // the counters of the signals that survive random gaps

	contacts []binding

	quotaMonth   int // year*12 + month of quotaSecs
	quotaSecs    float64
	quotaNoticed int // month the breach was last observed
}

// recent returns the i-th most recent attempt (0 the newest).
func (ls *lineState) recent(i int) *attempt {
	return &ls.hist[(ls.nHist-1-i)%len(ls.hist)]
}

func (ls *lineState) histLen() int { return min(ls.nHist, len(ls.hist)) }

// candidate is the attempt an INVITE at `at` to callee would add.
func (ls *lineState) candidate(at time.Time, callee string) attempt {
	a := attempt{at: at.UnixNano(), callee: digitsOf(callee)}
	if !ls.lastOutEnd.IsZero() && !ls.hasOutbound() && !at.Before(ls.lastOutEnd) {
		redial := ls.nHist > 0 && a.callee != 0 && ls.recent(0).callee == a.callee
		if !redial {
			a.gap, a.hasGap = at.Sub(ls.lastOutEnd), true
		}
	}
	return a
}

// noteAttempt adds a (a candidate) to the history, which keeps the
// newest depth attempts.
func (ls *lineState) noteAttempt(a attempt, depth int) {
	// A ring of another depth (the policy changed) is laid out anew;
	// while it grows, nHist == len(hist) and attempts are appended.
	if len(ls.hist) > depth || (len(ls.hist) < depth && ls.nHist > len(ls.hist)) {
		ls.resize(depth)
	}
	if len(ls.hist) < depth {
		if len(ls.hist) == cap(ls.hist) { // grow, never past depth
			grown := make([]attempt, len(ls.hist), min(max(2*cap(ls.hist), 2), depth))
			copy(grown, ls.hist)
			ls.hist = grown
		}
		ls.hist = append(ls.hist, a)
	} else {
		ls.hist[ls.nHist%len(ls.hist)] = a
	}
	ls.nHist++
	m := int32(a.at / int64(time.Minute))
	switch {
	case m > ls.hourAt:
		// Minutes since the last attempt start at zero.
		for k := ls.hourAt + 1; k <= m && k <= ls.hourAt+60; k++ {
			ls.hour[k%60] = 0
		}
		ls.hourAt = m
	case m <= ls.hourAt-60:
		return // older than the hour kept
	}
	if c := &ls.hour[m%60]; *c < 65535 {
		*c++
	}
}

// resize lays the history out oldest first in a ring of depth (a policy
// changed how far back the rules look), keeping the newest attempts.
func (ls *lineState) resize(depth int) {
	n := min(ls.histLen(), depth)
	out := make([]attempt, n, depth)
	for i := 0; i < n; i++ {
		out[n-1-i] = *ls.recent(i)
	}
	ls.hist, ls.nHist = out, n
}

// lastHour counts attempts in the hour up to at.
func (ls *lineState) lastHour(at time.Time) int {
	q := int32(at.Unix() / 60)
	n := 0
	for k := int32(0); k < 60; k++ {
		if m := ls.hourAt - k; m > q-60 && m <= q {
			n += int(ls.hour[m%60])
		}
	}
	return n
}

func (ls *lineState) hasOutbound() bool {
	for i := range ls.calls {
		if ls.calls[i].dir == detect.Outbound {
			return true
		}
	}
	return false
}

func (ls *lineState) find(id string) int {
	for i := range ls.calls {
		if ls.calls[i].id == id {
			return i
		}
	}
	return -1
}

func (ls *lineState) remove(e *Engine, i int) {
	c := ls.calls[i]
	if c.dir == detect.Inbound && c.remote != "" {
		if n := e.inbound[c.remote]; n <= 1 {
			delete(e.inbound, c.remote)
		} else {
			e.inbound[c.remote] = n - 1
		}
	}
	last := len(ls.calls) - 1
	ls.calls[i] = ls.calls[last]
	ls.calls[last] = liveCall{}
	ls.calls = ls.calls[:last]
}

func (ls *lineState) dropCalls(e *Engine) {
	for len(ls.calls) > 0 {
		ls.remove(e, len(ls.calls)-1)
	}
}

// prune drops calls the engine never heard the end of (the tracker was
// full, or the INVITE never left): setups past the setup timeout, and
// answered calls past the longest call.
func (ls *lineState) prune(e *Engine, now time.Time) {
	sec := int32(now.Unix())
	if sec == ls.prunedAt {
		return
	}
	ls.prunedAt = sec
	for i := len(ls.calls) - 1; i >= 0; i-- {
		c := &ls.calls[i]
		if (c.answered.IsZero() && now.Sub(c.start) > e.opts.SetupTimeout+time.Minute) ||
			now.Sub(c.start) > e.opts.MaxDuration+e.opts.SetupTimeout {
			ls.remove(e, i)
		}
	}
}

// digitsOf reads an E.164 number's digits as an integer, 0 for anything
// else (dial strings, names).
func digitsOf(s string) uint64 {
	if len(s) > 0 && s[0] == '+' {
		s = s[1:]
	}
	if s == "" || len(s) > 15 {
		return 0
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}

func sortLongestFirst(codes []string) {
	sort.SliceStable(codes, func(i, j int) bool { return len(codes[i]) > len(codes[j]) })
}
