package sourcelimit

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}) }

func TestBucket(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		at    []time.Duration // offsets of the takes
		want  string          // one char per take: + taken, - refused
	}{
		{"burst then refused", 1, 3, []time.Duration{0, 0, 0, 0, 0}, "+++--"},
		{"refills at the rate", 2, 1, []time.Duration{0, 0, 400 * time.Millisecond, 500 * time.Millisecond, 600 * time.Millisecond, time.Second}, "+--+-+"},
		{"never beyond the burst", 100, 2, []time.Duration{0, time.Hour, time.Hour, time.Hour}, "++ +-"},
		{"zero rate: the burst once", 0, 2, []time.Duration{0, time.Second, time.Hour}, "++-"},
		{"clock going back takes nothing extra", 1, 1, []time.Duration{time.Second, 0, 500 * time.Millisecond}, "+--"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Bucket
			got := ""
			for _, d := range tt.at {
				if b.Take(t0.Add(d), tt.rate, tt.burst) {
					got += "+"
				} else {
					got += "-"
				}
			}
			want := ""
			for _, c := range tt.want {
				if c != ' ' {
					want += string(c)
				}
			}
			if got != want {
				t.Errorf("takes = %s, want %s", got, want)
			}
		})
	}
}

func TestSpendNeverAmplifies(t *testing.T) {
	tests := []struct {
		name  string
		in    uint64
		sends []int
		want  string
		out   uint64
	}{
		{"within what came in", 500, []int{200, 300}, "++", 500},
		{"one byte over", 500, []int{200, 301}, "+-", 200},
		{"a large answer to a small request", 100, []int{400}, "-", 0},
		{"nothing came in", 0, []int{1}, "-", 0},
		{"held back, smaller ones still fit", 500, []int{450, 100, 50}, "+-+", 500},
		{"negative is refused", 500, []int{-1}, "-", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Entry[struct{}]{BytesIn: tt.in}
			got := ""
			for _, n := range tt.sends {
				if e.Spend(n) {
					got += "+"
				} else {
					got += "-"
				}
			}
			if got != tt.want || e.BytesOut != tt.out {
				t.Errorf("sends = %s, out %d; want %s, out %d", got, e.BytesOut, tt.want, tt.out)
			}
			if e.BytesOut > e.BytesIn {
				t.Errorf("sent %d bytes for %d received", e.BytesOut, e.BytesIn)
			}
		})
	}
}

func TestFailPenalises(t *testing.T) {
	e := &Entry[struct{}]{}
	for i := 1; i < 5; i++ {
		if e.Fail(t0, 5, time.Minute) {
			t.Fatalf("failure %d started a penalty, want the 5th", i)
		}
		if e.Penalised(t0) {
			t.Fatalf("penalised after %d failures", i)
		}
	}
	if !e.Fail(t0, 5, time.Minute) || !e.Penalised(t0.Add(59*time.Second)) {
		t.Fatal("5th failure: no penalty")
	}
	if e.Penalised(t0.Add(time.Minute)) {
		t.Error("still penalised when the penalty ended")
	}
	if e.Failures != 0 {
		t.Errorf("failures = %d after the penalty started, want 0", e.Failures)
	}
	off := &Entry[struct{}]{}
	for range 100 {
		if off.Fail(t0, 0, time.Minute) {
			t.Fatal("max 0 penalised")
		}
	}
}

// TestTableBounded: the table never holds more than Max; a newcomer
// evicts the least recently seen idle entry, passes over penalised ones,
// and is refused when every candidate is busy or penalised.
func TestTableBounded(t *testing.T) {
	type step struct {
		src  int
		at   time.Duration
		want bool // admitted
	}
	tests := []struct {
		name     string
		max      int
		minIdle  time.Duration
		penalise []int // sources penalised after the steps' first pass
		steps    []step
		kept     []int // in the table at the end
		evicted  []int // told to OnEvict, in order
	}{
		{
			name: "least recently seen goes first", max: 3,
			steps: []step{{1, 0, true}, {2, 1, true}, {3, 2, true}, {1, 3, true}, {4, 4, true}, {5, 5, true}},
			kept:  []int{1, 4, 5}, evicted: []int{2, 3},
		},
		{
			name: "busy sources keep their place; the newcomer is refused", max: 2, minIdle: 10 * time.Second,
			steps: []step{{1, 0, true}, {2, 0, true}, {3, 5 * time.Second, false}, {3, 10 * time.Second, true}},
			kept:  []int{2, 3}, evicted: []int{1},
		},
		{
			name: "penalised sources are passed over", max: 2, penalise: []int{1},
			steps: []step{{1, 0, true}, {2, 1, true}, {3, 2, true}, {4, 3, true}},
			kept:  []int{1, 4}, evicted: []int{2, 3},
		},
		{
			name: "all penalised: refused", max: 2, penalise: []int{1, 2},
			steps: []step{{1, 0, true}, {2, 1, true}, {3, 2, false}},
			kept:  []int{1, 2},
		},
		{
			name: "a known source is touched, not added", max: 1,
			steps: []step{{1, 0, true}, {1, 1, true}, {1, 2, true}},
			kept:  []int{1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var evicted []int
			tab := &Table[int]{Max: tt.max, MinIdle: tt.minIdle, OnEvict: func(e *Entry[int]) { evicted = append(evicted, e.V) }}
			for _, s := range tt.steps {
				// Offsets in steps are seconds unless given with a unit.
				at := s.at
				if at < time.Millisecond {
					at *= time.Second
				}
				e := tab.Touch(addr(s.src), t0.Add(at))
				if (e != nil) != s.want {
					t.Fatalf("source %d at %v: admitted %v, want %v", s.src, at, e != nil, s.want)
				}
				if e != nil {
					e.V = s.src
					for _, p := range tt.penalise {
						if p == s.src {
							e.PenaltyUntil = t0.Add(time.Hour)
						}
					}
				}
				if tab.Len() > max(tt.max, 0) {
					t.Fatalf("table holds %d, max %d", tab.Len(), tt.max)
				}
			}
			for _, k := range tt.kept {
				if tab.Lookup(addr(k)) == nil {
					t.Errorf("source %d not kept", k)
				}
			}
			if tab.Len() != len(tt.kept) {
				t.Errorf("table holds %d, want %d", tab.Len(), len(tt.kept))
			}
			if fmt.Sprint(evicted) != fmt.Sprint(tt.evicted) && len(evicted)+len(tt.evicted) > 0 {
				t.Errorf("evicted %v, want %v", evicted, tt.evicted)
			}
			checkList(t, tab)
		})
	}
}

func TestTableExpireAndRemove(t *testing.T) {
	var evicted []netip.Addr
	tab := &Table[struct{}]{Max: 10, OnEvict: func(e *Entry[struct{}]) { evicted = append(evicted, e.Addr) }}
	for i := range 5 {
		tab.Touch(addr(i), t0.Add(time.Duration(i)*time.Second))
	}
	tab.Lookup(addr(0)).PenaltyUntil = t0.Add(time.Hour)
	tab.Remove(addr(4)) // became known: no report
	tab.Expire(t0.Add(12*time.Second), 10*time.Second)
	// 0 is penalised, 1 and 2 idle for 10 s or more, 3 for 9 s.
	if want := []netip.Addr{addr(1), addr(2)}; fmt.Sprint(evicted) != fmt.Sprint(want) {
		t.Errorf("expired %v, want %v", evicted, want)
	}
	if tab.Len() != 2 || tab.Lookup(addr(0)) == nil || tab.Lookup(addr(3)) == nil {
		t.Errorf("left %d entries, want sources 0 and 3", tab.Len())
	}
	checkList(t, tab)
}

// TestTableChurn drives many more sources than fit and checks the bound
// and the list at every step.
func TestTableChurn(t *testing.T) {
	tab := &Table[struct{}]{Max: 64, MinIdle: 10 * time.Millisecond}
	refused := 0
	for i := range 10_000 {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i % 251)})
		if tab.Touch(a, now) == nil {
			refused++
		}
		if tab.Len() > 64 {
			t.Fatalf("step %d: %d entries", i, tab.Len())
		}
	}
	checkList(t, tab)
	if refused == 0 {
		t.Error("nothing refused: MinIdle not honoured")
	}
}

// checkList: the list and the map hold the same entries, in order of
// last seen.
func checkList[V any](t *testing.T, tab *Table[V]) {
	t.Helper()
	n := 0
	var prev *Entry[V]
	for e := tab.head; e != nil; e = e.next {
		if e.prev != prev {
			t.Fatal("broken back link")
		}
		if prev != nil && e.Seen.After(prev.Seen) {
			t.Fatal("list out of order")
		}
		if tab.m[e.Addr] != e {
			t.Fatal("list entry not in the map")
		}
		prev = e
		n++
	}
	if prev != tab.tail || n != len(tab.m) {
		t.Fatalf("list of %d, map of %d, tail ok %v", n, len(tab.m), prev == tab.tail)
	}
}
