//go:build linux

package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	gosynctest "testing/synctest"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestCollectSinkRepair: a file a crash left with a partial last line is
// cut back to its last newline when opened again, and the next batch
// starts on a line of its own; whole files are left alone.
func TestCollectSinkRepair(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // partial line longer than the read buffer
	tests := []struct {
		name, before, after string
		cut                 int64
	}{
		{"new file", "", "N\n", 0},
		{"whole", "a\nb\n", "a\nb\nN\n", 0},
		{"partial line", "a\nb\n{\"id\":\"c", "a\nb\nN\n", 8},
		{"only a partial line", "{\"id\":", "N\n", 6},
		{"long partial line", "a\n" + long, "a\nN\n", int64(len(long))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			if tc.before != "" {
				if err := os.MkdirAll(filepath.Join(dir, "usage"), 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, "usage", "2026-12-04.jsonl"), tc.before)
			}
			s, err := openSink(dir, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.append("usage", "2026-12-04", []byte("N\n")); err != nil {
				t.Fatal(err)
			}
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "usage", "2026-12-04.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.after || s.repaired != tc.cut {
				t.Errorf("after: %.40q (cut %d); want %.40q (cut %d)", b, s.repaired, tc.after, tc.cut)
			}
		})
	}
}

// TestCollectSinkLock: one collector per output directory.
func TestCollectSinkLock(t *testing.T) {
	dir := t.TempDir()
	s, err := openSink(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openSink(dir, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "another collector") {
		t.Fatalf("second sink on %s: %v; want refused", dir, err)
	}
	s.close()
	s, err = openSink(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	s.close()
}

// queued is a message as the queue sees it: a payload of some size.
type queued struct {
	mqtt.Message
	n int
}

func (q queued) Payload() []byte { return make([]byte, q.n) }

// TestCollectQueueBound: put waits while the queue holds maxN messages or
// maxBytes of payload, a message larger than maxBytes goes alone, and a
// closed queue refuses puts but hands out what it holds.
func TestCollectQueueBound(t *testing.T) {
	gosynctest.Test(t, func(t *testing.T) {
		q := newMsgQueue(2, 100)
		q.put(queued{n: 10})
		q.put(queued{n: 10})
		third := make(chan bool)
		go func() { third <- q.put(queued{n: 10}) }()
		gosynctest.Wait()
		select {
		case <-third:
			t.Fatal("a third message went into a queue of 2")
		default:
		}
		if got := q.take(1, 1000); len(got) != 1 {
			t.Fatalf("took %d", len(got))
		}
		if !<-third {
			t.Fatal("the third put failed")
		}
		if got := q.take(10, 1000); len(got) != 2 {
			t.Fatalf("took %d, want the 2 queued", len(got))
		}

		big := make(chan bool)
		q.put(queued{n: 10})
		go func() { big <- q.put(queued{n: 500}) }()
		gosynctest.Wait()
		select {
		case <-big:
			t.Fatal("a message larger than the byte bound went into a queue that was not empty")
		default:
		}
		if got := q.take(10, 1000); len(got) != 1 {
			t.Fatalf("took %d", len(got))
		}
		<-big
		if got := q.take(10, 100); len(got) != 1 || len(got[0].Payload()) != 500 {
			t.Fatalf("the large message: took %d", len(got))
		}

		q.put(queued{n: 1})
		q.close()
		if q.put(queued{n: 1}) {
			t.Error("put into a closed queue")
		}
		if got := q.take(10, 100); len(got) != 1 {
			t.Errorf("a closed queue kept what it held: took %d", len(got))
		}
		if got := q.take(10, 100); got != nil {
			t.Errorf("a closed, empty queue: took %d", len(got))
		}
	})
}
