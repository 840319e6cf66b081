package sipproxy

import (
	"os"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestMain(m *testing.M) {
	// The test peers' library chatter (sipgo's package logger) stays out
	// of the output; the proxy's own logs are checked by each rig.
	sip.SetDefaultLogger(quiet)
	os.Exit(m.Run())
}
