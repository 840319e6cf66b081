package sipproxy

import (
	"context"
	"log/slog"

	"github.com/leadport/leadport-agent/store/phone"
)

// MaskNumbers masks every phone-number-like run in s (phone.MaskText).
func MaskNumbers(s string) string { return phone.MaskText(s) }

// redactHandler guards the logs of the SIP library: sipgo logs whole
// messages ("data") and start lines on some errors, which carry phone
// numbers. It drops the message dumps and masks numbers in what is left.
type redactHandler struct {
	next slog.Handler
	// onParseError gets each message the library could not parse (it
	// logs them, whole, and drops them).
	onParseError func(data string)
}

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Parse failures are logged at Error and must reach onParseError
	// whatever the configured level.
	return (l >= slog.LevelError && h.onParseError != nil) || h.next.Enabled(ctx, l)
}

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "failed to parse" && h.onParseError != nil {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "data" {
				h.onParseError(a.Value.String())
				return false
			}
			return true
		})
	}
	level := r.Level
	if quieted[r.Message] {
		level = slog.LevelDebug
	}
	if !h.next.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, MaskNumbers(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for i := range as {
		as[i] = redactAttr(as[i])
	}
	return redactHandler{h.next.WithAttrs(as), h.onParseError}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.next.WithGroup(name), h.onParseError}
}

// quieted are the library's reports of bad input from the network and of
// its own bookkeeping, logged at Error or Warn by sipgo. The proxy counts
// bad input and answers it; at those levels a peer sending garbage would
// flood the device's log, so they go to Debug.
var quieted = map[string]bool{
	"failed to parse":                     true,
	"Server tx failed to handle request":  true,
	"Client tx failed to handle response": true,
	"UDP ref went negative on try close":  true,
	"TCP ref went negative":               true,
}

// redactAttr drops the library's message dumps and masks numbers in the
// rest.
func redactAttr(a slog.Attr) slog.Attr {
	switch a.Key {
	case "data", "msg", "message", "body":
		return slog.String(a.Key, "[redacted]")
	}
	return phone.MaskAttr(a)
}

// LibraryLogger wraps log for the SIP library: message dumps dropped,
// numbers masked.
func LibraryLogger(log *slog.Logger) *slog.Logger {
	return slog.New(redactHandler{next: log.Handler()}).With("component", "sip")
}
