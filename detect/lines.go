package detect

import (
	"strings"

	"github.com/leadport/leadport-agent/store/phone"
)

// Lines is the set of the device's Leadport numbers, normalised to E.164.
// It is immutable; a new policy makes a new set.
type Lines struct {
	set            map[string]struct{}
	defaultCountry string
}

// NewLines normalises each number; ones that cannot be normalised are
// returned as bad (config validation catches them first).
func NewLines(numbers []string, defaultCountry string) (*Lines, []string) {
	l := &Lines{set: make(map[string]struct{}, len(numbers)), defaultCountry: defaultCountry}
	var bad []string
	for _, n := range numbers {
		e, err := phone.Normalize(n, defaultCountry)
		if err != nil {
			bad = append(bad, phone.Mask(n))
			continue
		}
		l.set[e] = struct{}{}
	}
	return l, bad
}

// Normalize turns a SIP user part or number into E.164 when it can, else
// returns it as it came (trimmed), with ok false.
func (l *Lines) Normalize(user string) (string, bool) {
	if user == "" {
		return "", false
	}
	e, err := phone.Normalize(user, l.defaultCountry)
	if err != nil {
		return strings.TrimSpace(user), false
	}
	return e, true
}

// Match returns the line a SIP user part names, if it names one.
func (l *Lines) Match(user string) (string, bool) {
	if l == nil || len(l.set) == 0 || user == "" {
		return "", false
	}
	e, ok := l.Normalize(user)
	if !ok {
		return "", false
	}
	_, ok = l.set[e]
	return e, ok
}

// Len is the number of lines.
func (l *Lines) Len() int {
	if l == nil {
		return 0
	}
	return len(l.set)
}

// All returns the lines, in no particular order.
func (l *Lines) All() []string {
	out := make([]string, 0, l.Len())
	if l != nil {
		for n := range l.set {
			out = append(out, n)
		}
	}
	return out
}
