package agent

import (
	"io"
	"log/slog"

	"github.com/leadport/leadport-agent/agent/config"
)

// NewLogger builds the daemon's logger from the log section. Values that
// could carry phone numbers are masked where they are logged, never here:
// a handler cannot know which strings are numbers.
func NewLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
