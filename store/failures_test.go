package store

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestFailureLog: a task failing on every commit logs its first failure,
// then one a minute with the count left out, and its recovery once.
func TestFailureLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	f := &failureLog{what: "merging the subject index"}
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	disk := errors.New("no space left on device")
	for _, step := range []struct {
		at     time.Duration
		fail   bool
		logged string // in the line logged; "" for none
	}{
		{0, true, "failures_not_logged=0"},
		{time.Second, true, ""},
		{30 * time.Second, true, ""},
		{59 * time.Second, true, ""},
		{61 * time.Second, true, "failures_not_logged=3"},
		{62 * time.Second, false, "succeeded again\" failures=5"},
		{63 * time.Second, false, ""},
		{64 * time.Second, true, "failures_not_logged=0"},
	} {
		buf.Reset()
		if step.fail {
			f.failed(log, t0.Add(step.at), disk)
		} else {
			f.succeeded(log)
		}
		got := buf.String()
		switch {
		case step.logged == "" && got != "":
			t.Errorf("at %v: logged %q, want nothing", step.at, got)
		case step.logged != "" && !strings.Contains(got, step.logged):
			t.Errorf("at %v: logged %q, want %q in it", step.at, got, step.logged)
		}
		if step.fail && got != "" && !strings.Contains(got, disk.Error()) {
			t.Errorf("at %v: warning %q does not say why", step.at, got)
		}
	}
}
