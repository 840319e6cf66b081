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
