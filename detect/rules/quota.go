package rules

import (
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/policy"
)

// quota: answered minutes on the line this calendar month (UTC) over the
// plan's allowance. Observed once a month per line; when blocking, every
// new call is refused and recorded.
func (e *Engine) quota(d *decision, ls *lineState) {
	allow := e.pol.Quota.MonthlyMinutes
	if allow <= 0 {
		return
	}
	at := d.ev.At.UTC()
	month := monthOf(at)
	used := 0.0
	if int(ls.quotaMonth) == month {
		used = ls.quotaSecs
	}
	for i := range ls.calls {
		if c := &ls.calls[i]; c.isAnswered() {
			if a := time.Unix(0, c.answered); monthOf(a) == month && at.After(a) {
				used += at.Sub(a).Seconds()
			}
		}
	}
	minutes := used / 60
	if minutes < float64(allow) {
		return
	}
	quiet := int(ls.quotaNoticed) == month
	ls.quotaNoticed = int32(month)
	d.add(trip{rule: policy.QuotaMinutes, status: sip.StatusForbidden, quiet: quiet,
		evidence: map[string]any{"minutes_used": round3(minutes), "monthly_minutes": allow,
			"month": fmt.Sprintf("%04d-%02d", at.Year(), int(at.Month()))}})
}

func monthOf(t time.Time) int {
	t = t.UTC()
	return t.Year()*12 + int(t.Month()) - 1
}

// addMinutes counts an answered call in the month it was answered.
func (ls *lineState) addMinutes(answered time.Time, d time.Duration) {
	m := int32(monthOf(answered))
	switch {
	case m > ls.quotaMonth:
		ls.quotaMonth, ls.quotaSecs = m, d.Seconds()
	case m == ls.quotaMonth:
		ls.quotaSecs += d.Seconds()
	}
}

// QuotaUse is a line's answered time in a month, for keeping across
// restarts.
type QuotaUse struct {
	Line    string  `json:"line"`
	Month   string  `json:"month"` // YYYY-MM
	Seconds float64 `json:"seconds"`
}

// QuotaUsage returns the answered time per line this engine has counted.
func (e *Engine) QuotaUsage() []QuotaUse {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []QuotaUse
	for l, ls := range e.state {
		if ls.quotaMonth > 0 {
			out = append(out, QuotaUse{Line: l, Month: fmt.Sprintf("%04d-%02d", ls.quotaMonth/12, ls.quotaMonth%12+1), Seconds: ls.quotaSecs})
		}
	}
	return out
}

// RestoreQuota adds saved answered time back, after a restart.
func (e *Engine) RestoreQuota(uses []QuotaUse) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, u := range uses {
		t, err := time.Parse("2006-01", u.Month)
		if err != nil || u.Seconds <= 0 {
			continue
		}
		if _, ok := e.lines.Match(u.Line); !ok {
			continue
		}
		e.line(u.Line).addMinutes(t, time.Duration(u.Seconds*float64(time.Second)))
	}
}
