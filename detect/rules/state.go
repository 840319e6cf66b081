package rules

import (
	"hash/fnv"
	"math"
	"sort"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

// liveCall is a call on a line from its INVITE until the engine hears of
// its end: 56 bytes, where time.Times took 88. Each line keeps room for
// one, so that the allow path allocates nothing.
type liveCall struct {
	id       string
	remote   string
	start    int64 // unix ns
	answered int64 // unix ns; 0 until answered
	dir      detect.Direction
}

func (c *liveCall) isAnswered() bool { return c.answered != 0 }

// since is how long before at the call started ringing or, once up, was
// answered.
func (c *liveCall) since(at time.Time) time.Duration {
	if c.answered != 0 {
		return time.Duration(at.UnixNano() - c.answered)
	}
	return time.Duration(at.UnixNano() - c.start)
}

// nanos is t as unix ns, 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// attempt is one outbound attempt in a line's pacing history: 32 bytes,
// where time.Durations and a 64-bit Call-ID hash took 48. A line keeps up
// to MaxHistory of them, and a PBX thousands of lines.
type attempt struct {
	at     int64  // unix ns
	callee uint64 // the callee's digits as a number; 0 when not a number
	id     uint32 // hash of the Call-ID (idOf), to find the attempt when its call ends
	// ringMS is how long it rang before the caller gave up (CANCEL), in
	// milliseconds; 0 when it did not end that way, or has not ended yet.
	ringMS uint32
	// gapMS is the time since the line's last outbound call ended, when
	// that is what the attempt followed (hasGap): no call was up, and it
	// is not a redial of the previous callee. Milliseconds, saturating at
	// 49 days: every threshold a policy sets is coarser and shorter.
	gapMS  uint32
	hasGap bool
}

// when is the attempt's time.
func (a *attempt) when() time.Time { return time.Unix(0, a.at) }

func (a *attempt) ring() time.Duration { return time.Duration(a.ringMS) * time.Millisecond }

func (a *attempt) gap() time.Duration { return time.Duration(a.gapMS) * time.Millisecond }

// millis is d in whole milliseconds, rounded to the nearest (evidence
// shows seconds to three decimals), 0 for less, saturating.
func millis(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(min((d+time.Millisecond/2)/time.Millisecond, math.MaxUint32))
}

// idOf is the key an attempt keeps of its Call-ID: 4 bytes where the
// Call-ID itself is often 40 or more. Two Call-IDs colliding among one
// line's last few attempts (one chance in hundreds of millions) would
// only misplace a ring time or count a new attempt as a repeat.
func idOf(callID string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(callID))
	return h.Sum32()
}

// lineState is what the rules remember about one line. Its size is fixed
// but for the live calls and the contacts, both bounded by what the rules
// allow (and by pruning when they only observe). A PBX has thousands of
// lines, every one held while configured: 336 bytes here (352 as
// allocated), a history of 320 (ten attempts) and room for one live call
// make 10,000 busy lines about 7 MB, under a 48 MiB budget that also
// holds every call in progress. The fields with pointers come first: the
// collector scans an object only up to its last pointer.
type lineState struct {
	calls []liveCall
	// hist is a ring of the newest attempts, the newest at
	// hist[(nHist-1)%len(hist)]. It grows as attempts come, up to the
	// depth the policy reads (Engine.histDepth, 10 by default, at most
	// policy.MaxHistory): with ten thousand lines, a fixed ring of the
	// most any policy may read was 30 MB of a 48 MB budget.
	hist []attempt
	// coolEvidence is what tripped the pacing cool-down, for the
	// violations of the attempts it blocks; nil when the rule only
	// observes (an observed repeat writes nothing) and once the cool-down
	// is over.
	coolEvidence map[string]any
	contacts     []binding

	nHist      int
	lastOutEnd int64 // unix ns; 0 before the first outbound call ended
	coolUntil  int64 // unix ns: the pacing cool-down's end; 0 for none

	// hour counts attempts per minute over the hour up to hourAt (a unix
	// minute): hour[m%60] is minute m's count for m in (hourAt-60,
	// hourAt]. 124 bytes where a minute stamp per counter took 960.
	hour   [60]uint16
	hourAt int32 // good until the year 6053
	// prunedAt is the unix second calls were last pruned: a line's
	// INVITEs prune at most once a second, as the limits they enforce
	// are minutes (4 bytes the alignment after hourAt left free).
	prunedAt int32

	sig signals // the counters of the signals that survive random gaps

	quotaMonth   int32 // year*12 + month of quotaSecs
	quotaNoticed int32 // month the breach was last observed
	quotaSecs    float64
}

// recent returns the i-th most recent attempt (0 the newest).
func (ls *lineState) recent(i int) *attempt {
	return &ls.hist[(ls.nHist-1-i)%len(ls.hist)]
}

func (ls *lineState) histLen() int { return min(ls.nHist, len(ls.hist)) }

// candidate is the attempt an INVITE at `at` to callee would add.
func (ls *lineState) candidate(at time.Time, callee string) attempt {
	a := attempt{at: at.UnixNano(), callee: digitsOf(callee)}
	if ls.lastOutEnd != 0 && !ls.hasOutbound() && a.at >= ls.lastOutEnd {
		redial := ls.nHist > 0 && a.callee != 0 && ls.recent(0).callee == a.callee
		if !redial {
			a.gapMS, a.hasGap = millis(time.Duration(a.at-ls.lastOutEnd)), true
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
		age := time.Duration(now.UnixNano() - c.start)
		if (!c.isAnswered() && age > e.opts.SetupTimeout+time.Minute) || age > e.opts.MaxDuration+e.opts.SetupTimeout {
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
