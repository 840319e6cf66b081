package rules

import (
	"testing"
	"time"
)

// TestHistoryDepth: the per-line ring keeps the newest attempts, in order,
// whatever the depth the policy asks for, and as that depth changes.
func TestHistoryDepth(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	steps := []struct {
		depth, add int
		wantLen    int
	}{
		{10, 3, 3},   // growing
		{10, 12, 10}, // wrapped
		{20, 1, 11},  // deeper: the kept ten plus the new one
		{20, 15, 20}, // wrapped again at the new depth
		{5, 1, 5},    // shallower: the newest five
		{5, 7, 5},
	}
	var ls lineState
	n := 0
	for i, st := range steps {
		for j := 0; j < st.add; j++ {
			n++
			ls.noteAttempt(attempt{at: t0.Add(time.Duration(n) * time.Second).UnixNano(), callee: uint64(n)}, st.depth)
		}
		if got := ls.histLen(); got != st.wantLen {
			t.Fatalf("step %d: %d attempts kept, want %d", i, got, st.wantLen)
		}
		if cap(ls.hist) > st.depth {
			t.Errorf("step %d: ring of %d for a depth of %d", i, cap(ls.hist), st.depth)
		}
		for k := 0; k < ls.histLen(); k++ {
			if got := ls.recent(k).callee; got != uint64(n-k) {
				t.Fatalf("step %d: recent(%d) is attempt %d, want %d", i, k, got, n-k)
			}
		}
	}
	if got := ls.lastHour(t0.Add(time.Duration(n) * time.Second)); got != n {
		t.Errorf("attempts in the last hour = %d, want %d", got, n)
	}
}

// TestLastHour: the per-minute counters cover the hour up to the newest
// attempt, whatever gaps lie between attempts.
func TestLastHour(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	var ls lineState
	for _, min := range []int{0, 0, 30, 59, 61, 125, 126, 126} {
		ls.noteAttempt(attempt{at: t0.Add(time.Duration(min) * time.Minute).UnixNano()}, 10)
	}
	for _, tt := range []struct{ at, want int }{
		{126, 3}, // 125, 126, 126
		{120, 0}, // asked about a past hour, after later minutes replaced it
		{185, 2}, // the hour (125, 185]: 126, 126
		{186, 0},
	} {
		if got := ls.lastHour(t0.Add(time.Duration(tt.at) * time.Minute)); got != tt.want {
			t.Errorf("attempts in the hour up to minute %d = %d, want %d", tt.at, got, tt.want)
		}
	}
	var fresh lineState
	for _, min := range []int{0, 0, 30, 59} {
		fresh.noteAttempt(attempt{at: t0.Add(time.Duration(min) * time.Minute).UnixNano()}, 10)
	}
	if got := fresh.lastHour(t0.Add(59 * time.Minute)); got != 4 {
		t.Errorf("attempts within one hour = %d, want 4", got)
	}
	if got := fresh.lastHour(t0.Add(60 * time.Minute)); got != 2 {
		t.Errorf("an hour after the first two: %d, want 2", got)
	}
}
