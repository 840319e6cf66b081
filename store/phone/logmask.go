package phone

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// numberLike finds what could be a phone number inside free text: a run
// of at least seven digits, optionally with a leading + and dashes. Dots
// and spaces are left out so addresses and ports stay readable; dates
// written with dashes are masked too, the price of never missing a number.
var numberLike = regexp.MustCompile(`\+?\d[\d\-]{5,}\d`)

// MaskText masks every phone-number-like run in s (Mask). A run glued to
// letters is part of a word, not a number (the hex of a UUID Call-ID, a
// temporary file's name): it stays, so that call ids remain usable to
// follow a call through the log.
func MaskText(s string) string {
	idx := numberLike.FindAllStringIndex(s, -1)
	if idx == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range idx {
		if (m[0] > 0 && isAlnum(s[m[0]-1])) || (m[1] < len(s) && isAlnum(s[m[1]])) {
			continue
		}
		b.WriteString(s[last:m[0]])
		b.WriteString(Mask(s[m[0]:m[1]]))
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z'
}

// MaskingHandler is an slog.Handler that masks phone-number-like runs in
// the message and in every text attribute (strings, errors, values that
// format as text, in groups too) before next sees them. Numbers (ints,
// floats), times and durations pass as they are. Every logger the agent
// builds has one, so that a number reaches no log whole even where a call
// site forgot to mask it.
type MaskingHandler struct{ next slog.Handler }

// NewMaskingHandler wraps next.
func NewMaskingHandler(next slog.Handler) *MaskingHandler {
	if m, ok := next.(*MaskingHandler); ok {
		return m
	}
	return &MaskingHandler{next: next}
}

// Enabled implements slog.Handler.
func (h *MaskingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *MaskingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, MaskText(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(MaskAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs implements slog.Handler.
func (h *MaskingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(as))
	for i, a := range as {
		masked[i] = MaskAttr(a)
	}
	return &MaskingHandler{next: h.next.WithAttrs(masked)}
}

// WithGroup implements slog.Handler.
func (h *MaskingHandler) WithGroup(name string) slog.Handler {
	return &MaskingHandler{next: h.next.WithGroup(name)}
}

// MaskAttr masks the text in one attribute, groups included.
func MaskAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, MaskText(v.String()))
	case slog.KindGroup:
		as := v.Group()
		out := make([]any, len(as))
		for i := range as {
			out[i] = MaskAttr(as[i])
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, MaskText(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, MaskText(x.String()))
		case []byte:
			return slog.String(a.Key, MaskText(string(x)))
		}
		return slog.String(a.Key, MaskText(fmt.Sprint(v.Any())))
	}
	return slog.Attr{Key: a.Key, Value: v}
}
