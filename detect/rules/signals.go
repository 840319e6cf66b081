package rules

import (
	"math"
	"math/bits"
	"time"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
)

// signals are a line's counters for the pacing signals that survive random
// gaps (issue 15): who ends answered calls and when, after-call work,
// rhythm and destinations. Everything is a fixed-size ring or a counter,
// about 80 bytes a line, so ten thousand lines stay under a megabyte.
type signals struct {
	// ans holds the talk time of the line's last answered outbound calls
	// in 10 ms units (saturating at 655 s: only the first seconds matter),
	// the newest at ans[(nAns-1)%len(ans)]; ansBy bit i says the caller
	// ended ans[i].
	ans   [policy.MaxAnsweredWindow]uint16
	ansBy uint16
	nAns  uint32
	// conv is a shift register over the line's last conversations, the
	// newest in bit 0: 1 when the next attempt followed it fast.
	conv  uint16
	nConv uint32
	// bad is a shift register over the last ended outbound attempts, the
	// newest in bit 0: 1 for a 404 or 484.
	bad    uint64
	nEnded uint32
	// afterConv: the line's last call was an outbound conversation, so
	// the next attempt's gap is after-call work to measure.
	afterConv bool
	// seqWide is the run of attempts, this one included, each to a callee
	// 1 to sequential_wide_step above the previous one.
	seqWide uint16
	// runN attempts since the line last paused, the first at runStart
	// (unix ns).
	runN     uint32
	runStart int64
	// suspectAt is the last suspect report (unix ns), for suspect_interval_s.
	suspectAt int64
}

// sigNext is what an attempt makes of the counters: measured when the
// pacing rule decides, written when the attempt is recorded.
type sigNext struct {
	seqWide  uint16
	runN     uint32
	runStart int64
	// convNew: the attempt is the first after a conversation; convFast:
	// it came sooner than min_gap_after_conversation_s.
	convNew, convFast bool
}

// advance measures what attempt a (a candidate, not yet in the history)
// does to the counters, without changing them.
func (s *signals) advance(a *attempt, ls *lineState, p *policy.PacingRule) sigNext {
	n := sigNext{seqWide: 1, runN: 1, runStart: a.at}
	if ls.nHist > 0 {
		prev := ls.recent(0)
		if c, pc := a.callee, prev.callee; c != 0 && pc != 0 && c > pc && c-pc <= uint64(p.SequentialWideStep) && s.seqWide < math.MaxUint16 {
			n.seqWide = s.seqWide + 1
		}
		// An attempt with no gap (a call still up, a redial) continues
		// the run: only idle time is a pause.
		if s.runN > 0 && !(a.hasGap && a.gap() >= time.Duration(p.PauseS)*time.Second) {
			n.runN, n.runStart = s.runN+1, s.runStart
		}
	}
	if s.afterConv && a.hasGap && (p.BusyHourAttempts == 0 || ls.lastHour(time.Unix(0, a.at)) >= p.BusyHourAttempts) {
		n.convNew = true
		n.convFast = a.gap() < time.Duration(p.MinGapAfterConversationS*float64(time.Second))
	}
	return n
}

// commit records an attempt's measure.
func (s *signals) commit(n sigNext) {
	s.seqWide, s.runN, s.runStart = n.seqWide, n.runN, n.runStart
	if n.convNew {
		s.conv <<= 1
		if n.convFast {
			s.conv |= 1
		}
		s.nConv++
	}
	// Whatever followed the conversation (a redial, a second call up),
	// only the first attempt after it measures the after-call work.
	s.afterConv = false
}

// ended notes a call's end on the line.
func (s *signals) ended(c *dialog.Call, p *policy.PacingRule) {
	if c.Direction != detect.Outbound {
		s.afterConv = false
		return
	}
	if c.Disposition == dialog.Blocked {
		return
	}
	s.bad <<= 1
	if c.FinalStatus == 404 || c.FinalStatus == 484 {
		s.bad |= 1
	}
	s.nEnded++
	if c.AnsweredAt.IsZero() {
		s.afterConv = false
		return
	}
	talk := c.Duration()
	i := s.nAns % uint32(len(s.ans))
	s.ans[i] = uint16(min(talk/(10*time.Millisecond), math.MaxUint16))
	s.ansBy &^= 1 << i
	if c.EndedBy == dialog.Caller {
		s.ansBy |= 1 << i
	}
	s.nAns++
	s.afterConv = talk >= time.Duration(p.ConversationS)*time.Second
}

// sigFigures are the figures the signals measure at an attempt.
type sigFigures struct {
	wideRun      int // sequential_wide_run
	fastConv     int // of conversations, followed fast
	convs        int // conversations looked at
	shortHangups int // answered calls ended by the caller 1-6 s after the answer
	spike        int // of those, the most within 0.3 s either way of one value
	spikeAt      float64
	answered     int // answered calls looked at
	invalid      int // 404/484 among the last ended attempts
	ended        int // ended attempts looked at
	sustained    int // attempts since the line last paused
	sustainedFor time.Duration
}

// measure returns the figures with the attempt's measure n counted in.
// It allocates nothing: it runs on every outbound attempt.
func (s *signals) measure(n sigNext, at int64, p *policy.PacingRule) sigFigures {
	f := sigFigures{wideRun: int(n.seqWide), sustained: int(n.runN), sustainedFor: time.Duration(at - n.runStart)}

	conv, nConv := s.conv, s.nConv
	if n.convNew {
		conv <<= 1
		if n.convFast {
			conv |= 1
		}
		nConv++
	}
	f.convs = min(int(nConv), p.Conversations)
	f.fastConv = bits.OnesCount16(conv & uint16(1<<f.convs-1))

	f.ended = min(int(s.nEnded), p.InvalidWindow)
	f.invalid = bits.OnesCount64(s.bad & (1<<f.ended - 1))
	if f.ended == 64 {
		f.invalid = bits.OnesCount64(s.bad)
	}

	f.answered = min(int(s.nAns), p.AnsweredWindow)
	var short [policy.MaxAnsweredWindow]uint16
	for k := 0; k < f.answered; k++ {
		i := (s.nAns - 1 - uint32(k)) % uint32(len(s.ans))
		if v := s.ans[i]; s.ansBy&(1<<i) != 0 && v >= 100 && v <= 600 {
			short[f.shortHangups] = v
			f.shortHangups++
		}
	}
	if p.SuspectHangupSpike > 0 || p.HangupSpike > 0 {
		f.spike, f.spikeAt = spikeOf(short[:f.shortHangups])
	}
	return f
}

// spikeOf returns the most values (10 ms units) within 0.3 s either way
// of one value, and that value in seconds. It sorts v in place.
func spikeOf(v []uint16) (int, float64) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
	most, at := 0, 0.0
	lo := 0
	for hi := range v {
		for v[hi]-v[lo] > 60 {
			lo++
		}
		if n := hi - lo + 1; n > most {
			most, at = n, float64(v[lo+(hi-lo)/2])/100
		}
	}
	return most, at
}

// sigBlock returns the evidence of the first of the newer signals that
// reaches its block threshold.
func sigBlock(f *sigFigures, p *policy.PacingRule) map[string]any {
	switch {
	case p.SequentialWideRun > 0 && p.SequentialWideStep > 0 && f.wideRun >= p.SequentialWideRun:
		return wideEvidence(f, p)
	case p.FastAfterConversation > 0 && f.fastConv >= p.FastAfterConversation:
		return convEvidence(f, p)
	case p.HangupSpike > 0 && f.spike >= p.HangupSpike:
		return spikeEvidence(f, p)
	case p.ShortHangups > 0 && f.shortHangups >= p.ShortHangups:
		return shortEvidence(f, p)
	case p.InvalidNumbers > 0 && f.invalid >= p.InvalidNumbers:
		return invalidEvidence(f, p)
	case p.SustainedAttempts > 0 && f.sustained >= p.SustainedAttempts:
		return sustainedEvidence(f, p)
	}
	return nil
}

// suspect looks for evidence that is building: each signal against its
// suspect threshold. It returns the trip of the first that reaches it,
// or false. Only one report per line per suspect_interval_s.
func (e *Engine) suspect(d *decision, ls *lineState, a *attempt) (trip, bool) {
	p := &e.pol.Pacing
	if ls.sig.suspectAt != 0 && a.at-ls.sig.suspectAt < int64(p.SuspectIntervalS)*int64(time.Second) {
		return trip{}, false
	}
	var ev map[string]any
	var score float64
	if n := p.SuspectSameRingTimeouts; n >= 2 {
		if m := ls.sameRing(min(p.RecentAttempts, ls.histLen()), n, time.Duration(p.RingToleranceMS)*time.Millisecond); m != nil {
			m["suspect_same_ring_timeouts"] = n
			m["same_ring_timeouts"] = p.SameRingTimeouts
			m["ring_tolerance_ms"] = p.RingToleranceMS
			ev, score = m, scoreOf(n, p.SameRingTimeouts, n)
		}
	}
	if r := p.SuspectSequentialRun; ev == nil && r >= 2 && p.SequentialStep > 0 && a.callee != 0 {
		if run := ls.seqRun(a, p.SequentialStep, r); run >= r {
			ev = map[string]any{"signal": "sequential_numbers", "run": run, "suspect_sequential_run": r,
				"sequential_run": p.SequentialRun, "sequential_step": p.SequentialStep}
			score = scoreOf(run, p.SequentialRun, r)
		}
	}
	if ev == nil {
		f := &d.fig
		switch {
		case p.SuspectSequentialWideRun > 0 && p.SequentialWideStep > 0 && f.wideRun >= p.SuspectSequentialWideRun:
			ev, score = wideEvidence(f, p), scoreOf(f.wideRun, p.SequentialWideRun, p.SuspectSequentialWideRun)
		case p.SuspectFastAfterConversation > 0 && f.fastConv >= p.SuspectFastAfterConversation:
			ev, score = convEvidence(f, p), scoreOf(f.fastConv, p.FastAfterConversation, p.SuspectFastAfterConversation)
		case p.SuspectHangupSpike > 0 && f.spike >= p.SuspectHangupSpike:
			ev, score = spikeEvidence(f, p), scoreOf(f.spike, p.HangupSpike, p.SuspectHangupSpike)
		case p.SuspectShortHangups > 0 && f.shortHangups >= p.SuspectShortHangups:
			ev, score = shortEvidence(f, p), scoreOf(f.shortHangups, p.ShortHangups, p.SuspectShortHangups)
		case p.SuspectInvalidNumbers > 0 && f.invalid >= p.SuspectInvalidNumbers:
			ev, score = invalidEvidence(f, p), scoreOf(f.invalid, p.InvalidNumbers, p.SuspectInvalidNumbers)
		case p.SuspectSustainedAttempts > 0 && f.sustained >= p.SuspectSustainedAttempts:
			ev, score = sustainedEvidence(f, p), scoreOf(f.sustained, p.SustainedAttempts, p.SuspectSustainedAttempts)
		}
	}
	if ev == nil {
		return trip{}, false
	}
	ls.sig.suspectAt = a.at
	ev["score"] = score
	return trip{rule: policy.Pacing, evidence: ev, suspect: true, score: score}, true
}

// scoreOf is a suspect figure against the block threshold (or, with no
// block threshold, twice the suspect one): below 1, since at the block
// threshold the signal blocks instead.
func scoreOf(figure, block, suspect int) float64 {
	limit := block
	if limit <= 0 {
		limit = 2 * suspect
	}
	return math.Min(0.99, math.Round(100*float64(figure)/float64(limit))/100)
}

// seqRun is the run of callees, a's included, each 1 to step above the
// previous one, counted up to limit.
func (ls *lineState) seqRun(a *attempt, step, limit int) int {
	next, run := a.callee, 1
	for i := 0; i < ls.histLen() && run < limit; i++ {
		c := ls.recent(i).callee
		if c == 0 || next <= c || next-c > uint64(step) {
			break
		}
		run++
		next = c
	}
	return run
}

func wideEvidence(f *sigFigures, p *policy.PacingRule) map[string]any {
	return map[string]any{"signal": "sequential_wide", "run": f.wideRun, "sequential_wide_step": p.SequentialWideStep,
		"sequential_wide_run": p.SequentialWideRun, "suspect_sequential_wide_run": p.SuspectSequentialWideRun}
}

func convEvidence(f *sigFigures, p *policy.PacingRule) map[string]any {
	return map[string]any{"signal": "after_call_work", "fast_after_conversation": f.fastConv, "of_conversations": f.convs,
		"conversation_s": p.ConversationS, "min_gap_after_conversation_s": p.MinGapAfterConversationS,
		"block_at": p.FastAfterConversation, "suspect_at": p.SuspectFastAfterConversation}
}

func spikeEvidence(f *sigFigures, p *policy.PacingRule) map[string]any {
	return map[string]any{"signal": "hangup_spike", "spike": f.spike, "spike_at_s": f.spikeAt, "of_answered": f.answered,
		"hangup_spike": p.HangupSpike, "suspect_hangup_spike": p.SuspectHangupSpike}
}

func shortEvidence(f *sigFigures, p *policy.PacingRule) map[string]any {
	return map[string]any{"signal": "short_hangups", "short_hangups": f.shortHangups, "of_answered": f.answered,
		"block_at": p.ShortHangups, "suspect_at": p.SuspectShortHangups}
}

func invalidEvidence(f *sigFigures, p *policy.PacingRule) map[string]any {
	return map[string]any{"signal": "invalid_numbers", "invalid": f.invalid, "of_attempts": f.ended,
		"invalid_numbers": p.InvalidNumbers, "suspect_invalid_numbers": p.SuspectInvalidNumbers}
}

func sustainedEvidence(f *sigFigures, p *policy.PacingRule) map[string]any {
	h := f.sustainedFor.Hours()
	rate := 0.0
	if h > 0 {
		rate = round3(float64(f.sustained) / h)
	}
	return map[string]any{"signal": "sustained", "attempts": f.sustained, "over_h": round3(h), "per_hour": rate,
		"pause_s": p.PauseS, "sustained_attempts": p.SustainedAttempts, "suspect_sustained_attempts": p.SuspectSustainedAttempts}
}
