package phone

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type stringer struct{}

func (stringer) String() string { return "sip:+15551234567@pbx" }

func TestMaskingHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewMaskingHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	log = log.With("caller", "+12125550100").WithGroup("g")
	log.Debug("call from +15551234567 refused",
		"remote", "15551234567",
		"err", errors.New("dial sip:5551234567@edge: timeout"),
		"uri", stringer{},
		"raw", []byte("From: <sip:+15551234567@x>"),
		"list", []string{"+15551234567"},
		slog.Group("inner", "tn", "+15557654321"),
		"bytes", 268435456,
		"took", 1500*time.Millisecond,
		"port", "5060",
		"call_id", "2bbfec8b-300a-4b2e-88b4-d1234567890a",
		"path", "/tmp/TestRun1234567/data",
	)
	out := buf.String()
	for _, whole := range []string{"5551234567", "2125550100", "5557654321"} {
		if strings.Contains(out, whole) {
			t.Errorf("log carries %s whole:\n%s", whole, out)
		}
	}
	// What is not text, or too short to be a number, stays readable: the
	// check can tell masking from dropping.
	for _, kept := range []string{"bytes=268435456", "took=1.5s", "port=5060", "+1555***4567", "+1212***0100",
		"call_id=2bbfec8b-300a-4b2e-88b4-d1234567890a", "path=/tmp/TestRun1234567/data"} {
		if !strings.Contains(out, kept) {
			t.Errorf("log lacks %q:\n%s", kept, out)
		}
	}
}

func TestMaskingHandlerWrapsOnce(t *testing.T) {
	h := NewMaskingHandler(slog.NewTextHandler(&bytes.Buffer{}, nil))
	if NewMaskingHandler(h) != h {
		t.Error("a masking handler was wrapped again")
	}
}
