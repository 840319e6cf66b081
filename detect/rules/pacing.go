package rules

import (
	"math"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/policy"
)

// pacing looks for machine-paced dialing in a line's outbound attempts.
// Each signal has its own threshold; the first that trips starts a
// cool-down during which new outbound attempts on the line are refused.
func (e *Engine) pacing(d *decision, ls *lineState) {
	p := &e.pol.Pacing
	at := d.ev.At
	if ls.coolUntil != 0 {
		if at.UnixNano() < ls.coolUntil {
			d.cooling = true
			t := trip{rule: policy.Pacing, status: sip.StatusForbidden, quiet: true}
			if t.blocks(e.pol) {
				// Only a blocked repeat writes a violation, so only it
				// needs the evidence. One that began while the rule only
				// observed has none kept: it says when the cool-down ends.
				t.evidence = cloneEvidence(ls.coolEvidence)
				t.evidence["cooldown_until"] = time.Unix(0, ls.coolUntil).UTC().Format(time.RFC3339)
			}
			d.add(t)
			return
		}
		ls.coolUntil, ls.coolEvidence = 0, nil
	}
	if ls.nHist > 0 && ls.recent(0).id == idOf(callID(d.ev.Request)) {
		// The newest attempt again (same Call-ID): a retransmission the
		// proxy relays anew once its transaction has ended, or the INVITE
		// re-sent with credentials after a 401/407. One attempt, measured
		// once.
		d.repeat = true
		return
	}
	a := ls.candidate(at, d.ev.Remote)
	d.att, d.hasAtt = a, true
	d.next, d.hasNext = ls.sig.advance(&a, ls, p), true
	d.fig = ls.sig.measure(d.next, a.at, p)
	ev, numbers := e.pacingSignal(d, ls, &a)
	if ev == nil {
		if t, ok := e.suspect(d, ls, &a); ok {
			d.add(t)
		}
		return
	}
	cool := time.Duration(p.CooldownS) * time.Second
	ev["cooldown_s"] = p.CooldownS
	t := trip{rule: policy.Pacing, status: sip.StatusForbidden, evidence: ev, numbers: numbers}
	ls.coolUntil, ls.coolEvidence = at.Add(cool).UnixNano(), nil
	if t.blocks(e.pol) {
		ls.coolEvidence = ev // never changed after: repeats clone it
	}
	d.add(t)
}

// pacingSignal returns the evidence of the first signal that trips, with
// the figures measured and the threshold in force.
func (e *Engine) pacingSignal(d *decision, ls *lineState, a *attempt) (map[string]any, []string) {
	p := &e.pol.Pacing
	at := a.when()

	if p.MaxParallel > 0 {
		// Calls to the same number are not counted: a double click on a
		// dial button is a person's slip, not a dialer (trunking.concurrent
		// still refuses the second call).
		n := 0
		for i := range ls.calls {
			if c := &ls.calls[i]; c.dir == detect.Outbound && c.remote != d.ev.Remote {
				n++
			}
		}
		if n+1 > p.MaxParallel {
			return map[string]any{"signal": "parallel", "parallel": n + 1, "max_parallel": p.MaxParallel}, nil
		}
	}
	if p.MaxAttemptsPerMinute > 0 {
		n := 1
		for i := 0; i < ls.histLen(); i++ {
			if at.Sub(ls.recent(i).when()) >= time.Minute {
				break
			}
			n++
		}
		if n > p.MaxAttemptsPerMinute {
			return map[string]any{"signal": "per_minute", "attempts": n, "max_attempts_per_minute": p.MaxAttemptsPerMinute}, nil
		}
	}
	if p.MaxAttemptsPerHour > 0 {
		if n := ls.lastHour(at) + 1; n > p.MaxAttemptsPerHour {
			return map[string]any{"signal": "per_hour", "attempts": n, "max_attempts_per_hour": p.MaxAttemptsPerHour}, nil
		}
	}
	if minGap := time.Duration(p.MinGapAfterCallS * float64(time.Second)); p.ShortGaps > 0 && minGap > 0 && a.hasGap && a.gap() < minGap {
		short, shortest := 1, a.gap()
		window := min(p.RecentAttempts, ls.histLen()+1)
		for i := 0; i < window-1; i++ {
			if h := ls.recent(i); h.hasGap && h.gap() < minGap {
				short++
				shortest = min(shortest, h.gap())
			}
		}
		if short >= p.ShortGaps {
			return map[string]any{"signal": "gap_after_call", "short_gaps": short, "of_attempts": window,
				"shortest_gap_s": round3(shortest.Seconds()), "min_gap_after_call_s": p.MinGapAfterCallS,
				"short_gaps_allowed": p.ShortGaps - 1}, nil
		}
	}
	if n := p.SameRingTimeouts; n >= 2 {
		if ev := ls.sameRing(min(p.RecentAttempts, ls.histLen()), n, time.Duration(p.RingToleranceMS)*time.Millisecond); ev != nil {
			ev["same_ring_timeouts"] = n
			ev["ring_tolerance_ms"] = p.RingToleranceMS
			return ev, nil
		}
	}
	if k := p.RegularOver; k >= 2 && ls.histLen() >= k {
		var iv [policy.MaxHistory]float64
		var sum, sq float64
		prev := at
		for i := 0; i < k; i++ {
			iv[i] = prev.Sub(ls.recent(i).when()).Seconds()
			sum += iv[i]
			sq += iv[i] * iv[i]
			prev = ls.recent(i).when()
		}
		mean := sum / float64(k)
		if mean > 0 {
			cv := math.Sqrt(math.Max(sq/float64(k)-mean*mean, 0)) / mean
			if cv < p.RegularCV {
				return map[string]any{"signal": "regular_intervals", "intervals": k, "mean_interval_s": round3(mean),
					"cv": round3(cv), "regular_cv": p.RegularCV}, nil
			}
		}
		if tol := float64(p.TickToleranceMS) / 1000; tol > 0 {
			if period, ok := onTicks(iv[:k], tol); ok {
				return map[string]any{"signal": "timer_ticks", "intervals": k, "period_s": round3(period),
					"tick_tolerance_ms": p.TickToleranceMS}, nil
			}
		}
	}
	if r := p.SequentialRun; r >= 2 && p.SequentialStep > 0 && ls.histLen() >= r-1 && a.callee != 0 {
		next := a.callee
		run := []uint64{next}
		for i := 0; i < r-1; i++ {
			c := ls.recent(i).callee
			if c == 0 || next <= c || next-c > uint64(p.SequentialStep) {
				break
			}
			run = append(run, c)
			next = c
		}
		if len(run) >= r {
			numbers := make([]string, len(run))
			for i, c := range run {
				numbers[len(run)-1-i] = "+" + strconv.FormatUint(c, 10)
			}
			return map[string]any{"signal": "sequential_numbers", "run": len(run), "sequential_run": r,
				"sequential_step": p.SequentialStep}, numbers
		}
	}
	if ev := sigBlock(&d.fig, p); ev != nil {
		return ev, nil
	}
	return nil, nil
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func cloneEvidence(m map[string]any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sameRing looks among the last `window` attempts for n given up after
// the same ringing time, to within tol either way.
func (ls *lineState) sameRing(window, n int, tol time.Duration) map[string]any {
	var rings [policy.MaxHistory]time.Duration
	k := 0
	for i := 0; i < window; i++ {
		if r := ls.recent(i).ring(); r > 0 {
			rings[k] = r
			k++
		}
	}
	if k < n {
		return nil
	}
	s := rings[:k]
	// Insertion sort: at most MaxHistory values, and no allocation.
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	for i := 0; i+n <= len(s); i++ {
		if s[i+n-1]-s[i] <= 2*tol {
			return map[string]any{"signal": "fixed_ring_timeout", "cancels": n, "of_attempts": window,
				"ring_s": round3(s[i+n/2].Seconds())}
		}
	}
	return nil
}

// onTicks reports whether every interval is a whole multiple (1 to 8) of
// one period of at least 2 s, to within tol seconds: the attempts of a
// dialer started by a timer, which skips the ticks while its line is busy.
// The period is tried as the shortest interval divided by 1, 2 or 3.
func onTicks(iv []float64, tol float64) (float64, bool) {
	shortest := math.Inf(1)
	for _, v := range iv {
		shortest = math.Min(shortest, v)
	}
	for m := 1.0; m <= 3; m++ {
		period := shortest / m
		if period < 2 {
			break
		}
		ok := true
		for _, v := range iv {
			n := math.Round(v / period)
			if n < 1 || n > 8 || math.Abs(v-n*period) > tol {
				ok = false
				break
			}
		}
		if ok {
			return period, true
		}
	}
	return 0, false
}
