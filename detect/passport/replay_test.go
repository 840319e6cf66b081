package passport

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

func TestCountersWindow(t *testing.T) {
	type step struct {
		ctr uint64
		err error
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{1, nil}, {2, nil}, {3, nil}}},
		{"first takes any", []step{{5000, nil}, {5001, nil}}},
		{"replay of the highest", []step{{1, nil}, {1, ErrReplay}}},
		{"out of order once", []step{{1, nil}, {4, nil}, {3, nil}, {2, nil}, {3, ErrReplay}, {2, ErrReplay}, {4, ErrReplay}}},
		{"window edge", []step{{2000, nil}, {2000 - ReplayWindow + 1, nil}, {2000 - ReplayWindow, ErrReplay}}},
		{"word edges", []step{{200, nil}, {200 - 63, nil}, {200 - 64, nil}, {200 - 65, nil}, {264, nil}, {200 - 63, ErrReplay}, {200 - 64, ErrReplay}, {200 - 65, ErrReplay}, {199, nil}}},
		{"seen bits move up", []step{{10, nil}, {9, nil}, {100, nil}, {9, ErrReplay}, {10, ErrReplay}, {8, nil}}},
		{"jump past the window", []step{{10, nil}, {10 + ReplayWindow, nil}, {11, nil}, {10, ErrReplay}}},
		{"far jump", []step{{10, nil}, {1 << 40, nil}, {1<<40 - 1, nil}, {10, ErrReplay}}},
		{"top of uint64", []step{{1<<64 - 2, nil}, {1<<64 - 1, nil}, {1<<64 - 2, ErrReplay}, {1<<64 - 3, nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w *counters
			for i, s := range tt.steps {
				var err error
				if w == nil {
					w = &counters{top: s.ctr}
					w.seen[0] = 1
				} else {
					err = w.accept(s.ctr)
				}
				if !errors.Is(err, s.err) {
					t.Fatalf("step %d: accept(%d) = %v, want %v", i, s.ctr, err, s.err)
				}
			}
		})
	}
}

// TestCountersModel runs random counter sequences, in order, shuffled,
// with repeats and jumps, against the plain definition: a counter is
// accepted when never accepted before and less than ReplayWindow below
// the highest accepted.
func TestCountersModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for run := range 200 {
		var w counters
		seen := map[uint64]bool{}
		var top uint64
		next := uint64(r.IntN(10) + 1)
		for i := range 3000 {
			var ctr uint64
			switch k := r.IntN(10); {
			case k < 5:
				ctr = next
				next += uint64(r.IntN(3) + 1)
			case k < 8 && top > 0:
				ctr = top - min(uint64(r.IntN(ReplayWindow+100)), top-1)
			case k < 9:
				ctr = top + uint64(r.IntN(3*ReplayWindow))
			default:
				ctr = uint64(r.IntN(int(top) + 1))
			}
			if ctr == 0 {
				ctr = 1
			}
			want := !seen[ctr] && (top == 0 || ctr > top || top-ctr < ReplayWindow)
			var err error
			if top == 0 {
				w = counters{top: ctr}
				w.seen[0] = 1
			} else {
				err = w.accept(ctr)
			}
			if (err == nil) != want {
				t.Fatalf("run %d step %d: accept(%d) with top %d = %v, want accepted=%v", run, i, ctr, top, err, want)
			}
			if err == nil {
				seen[ctr] = true
				top = max(top, ctr)
			}
			if top != w.top {
				t.Fatalf("run %d step %d: top %d, want %d", run, i, w.top, top)
			}
		}
	}
}

func TestReplaysCapacity(t *testing.T) {
	const window = time.Minute
	var r replays
	now := t0
	accept := func(key string, ctr uint64) error { return r.accept(key, ctr, now, window, 2) }
	if err := accept("a", 1); err != nil {
		t.Fatal(err)
	}
	if err := accept("b", 1); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * window)
	if err := accept("b", 2); err != nil {
		t.Fatal(err)
	}
	// a was last active two windows ago: one of its tokens could still be
	// fresh, so it is kept and c refused.
	if err := accept("c", 1); !errors.Is(err, ErrCapacity) {
		t.Fatalf("third key with the others active = %v, want ErrCapacity", err)
	}
	now = now.Add(time.Second)
	if err := accept("c", 1); err != nil {
		t.Fatalf("third key once a is idle = %v", err)
	}
	if _, ok := r.byKey["a"]; ok || len(r.byKey) != 2 || r.lru.Len() != 2 {
		t.Fatalf("a not the one forgotten: %d keys", len(r.byKey))
	}
	// b's counters survived: the least recently used went, not b.
	if err := accept("b", 2); !errors.Is(err, ErrReplay) {
		t.Fatalf("b's counter 2 again = %v, want ErrReplay", err)
	}
	// A refused counter does not make its key recent.
	now = now.Add(3 * window)
	if err := accept("c", 1); !errors.Is(err, ErrReplay) {
		t.Fatal(err)
	}
	if err := accept("d", 1); err != nil {
		t.Fatalf("new key with b and c idle = %v", err)
	}
	for i := range 50 {
		now = now.Add(3 * window)
		if err := accept("k"+strconv.Itoa(i), 1); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.byKey) != 2 || r.lru.Len() != 2 {
		t.Fatalf("%d keys tracked with a limit of 2", len(r.byKey))
	}
}
