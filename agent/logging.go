package agent

import (
	"io"
	"log/slog"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/store/phone"
)

// NewLogger builds the daemon's logger from the log section. Every record
// passes phone.MaskingHandler: call sites mask the numbers they know of,
// and the handler masks whatever looks like one in any text, so a number a
// call site forgot (in an error from a library, say) reaches no log whole.
func NewLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(phone.NewMaskingHandler(h))
}
