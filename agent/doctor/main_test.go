package doctor

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestMain sets sipgo's package-global logger before any test starts a
// SIP user agent: the doctor sets it on its first OPTIONS, and a write
// there while a test's own sipgo server reads it is a data race (the
// binary never runs both).
func TestMain(m *testing.M) {
	sipLogOnce.Do(func() { sip.SetDefaultLogger(slog.New(slog.NewTextHandler(io.Discard, nil))) })
	os.Exit(m.Run())
}
