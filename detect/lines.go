package detect

import (
	"strings"

	"github.com/emiago/sipgo/sip"

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

// Classify finds the line a request belongs to and the other party:
// outbound from the From user or P-Asserted-Identity, inbound from the
// Request-URI or To user. The other party is normalised when it can be.
// Every SIP source and the replay use it, so they agree on what a line's
// traffic is.
func Classify(lines *Lines, dir Direction, req *sip.Request) (line, remote string) {
	var cands [2]string
	var other string
	if dir == Outbound {
		if f := req.From(); f != nil {
			cands[0] = f.Address.User
		}
		if pai := req.GetHeader("P-Asserted-Identity"); pai != nil {
			cands[1] = headerUser(pai.Value())
		}
		other = req.Recipient.User
		if other == "" {
			if t := req.To(); t != nil {
				other = t.Address.User
			}
		}
	} else {
		cands[0] = req.Recipient.User
		if t := req.To(); t != nil {
			cands[1] = t.Address.User
		}
		if f := req.From(); f != nil {
			other = f.Address.User
		}
	}
	for _, c := range cands {
		if l, ok := lines.Match(c); ok {
			line = l
			break
		}
	}
	remote, _ = lines.Normalize(other)
	return line, remote
}

// headerUser pulls the user part out of a name-addr header value such as
// P-Asserted-Identity without a full parse.
func headerUser(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		v = v[i+1:]
		if j := strings.IndexByte(v, '>'); j >= 0 {
			v = v[:j]
		}
	}
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	if i := strings.IndexAny(v, "@;"); i >= 0 {
		v = v[:i]
	}
	return v
}
