package sync

import (
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// fakeMessage is a received message as paho hands it over; only the
// payload matters to the queue.
type fakeMessage struct {
	mqtt.Message
	payload []byte
}

func (m fakeMessage) Payload() []byte { return m.payload }

// The command queue never blocks paho's reader and never grows past its
// bounds: what does not fit is refused (left unacknowledged) and counted,
// and room comes back as the worker takes messages.
func TestCommandQueueBounds(t *testing.T) {
	tests := []struct {
		name    string
		size    int // payload bytes of each message
		pushes  int
		wantLen int
	}{
		{"count bound", 100, maxQueuedCommands + 10, maxQueuedCommands},
		{"byte bound", 1 << 20, 20, maxQueuedCommandBytes / (1 << 20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := cmdQueue{ready: make(chan struct{}, 1)}
			m := fakeMessage{payload: []byte(strings.Repeat("x", tt.size))}
			took := 0
			for range tt.pushes {
				if q.push(m) {
					took++
				}
			}
			if took != tt.wantLen || len(q.q) != tt.wantLen || q.refused != uint64(tt.pushes-tt.wantLen) {
				t.Fatalf("took %d, queued %d, refused %d; want %d queued and %d refused", took, len(q.q), q.refused, tt.wantLen, tt.pushes-tt.wantLen)
			}
			if _, ok := q.pop(); !ok {
				t.Fatal("nothing to pop")
			}
			if !q.push(m) {
				t.Fatal("no room after a pop")
			}
			for {
				if _, ok := q.pop(); !ok {
					break
				}
			}
			if q.bytes != 0 {
				t.Fatalf("%d bytes counted in an empty queue", q.bytes)
			}
		})
	}
}
