package passport

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
)

// The fixed values of a Leadport PASSporT's header.
const (
	AlgES256    = "ES256"
	TypPassport = "passport"
)

// Header is the JWS protected header. Sign fills Alg and Typ when they are
// empty and refuses any other value; X5U, when set, must be the URI the
// Identity header names in its info parameter (stock verifiers compare the
// two).
//
// The fields are declared in lexicographic order of their JSON names so
// that encoding/json writes them in the order RFC 8225 section 9 asks for.
type Header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	X5U string `json:"x5u,omitempty"`
}

// Verdict is what the agent decided about the call it signed.
type Verdict string

// The verdicts a token carries. A blocked call is never signed: the agent
// answers it itself.
const (
	// Allowed: no rule objected.
	Allowed Verdict = "allowed"
	// Observed: rules in observe-only mode matched; Claims.Rules names them.
	Observed Verdict = "observed"
)

func (v Verdict) valid() bool { return v == Allowed || v == Observed }

// Orig is the originating identity; only telephone numbers are used.
type Orig struct {
	TN string `json:"tn"`
}

// Dest is the destination identity: one or more telephone numbers.
type Dest struct {
	TN []string `json:"tn"`
}

// Claims is the PASSporT payload. iat, orig, dest and origid are RFC 8225
// claims; the others are Leadport's private claims, described in the
// package documentation.
//
// As in Header, the fields are in lexicographic order of their JSON names,
// so the payload encodes the way RFC 8225 section 9 asks; a test holds
// this order.
type Claims struct {
	CallBinding string   `json:"cb"`
	Counter     uint64   `json:"ctr"`
	Dest        Dest     `json:"dest"`
	Device      string   `json:"dev"`
	IssuedAt    int64    `json:"iat"`
	Orig        Orig     `json:"orig"`
	OrigID      string   `json:"origid"`
	Policy      int      `json:"pol"`
	Rules       []string `json:"rules,omitempty"`
	Verdict     Verdict  `json:"vrd"`
}

// check reports the first missing or impossible claim; signer and
// verifier hold tokens to the same rules.
func (c *Claims) check() error {
	switch {
	case c.IssuedAt <= 0:
		return fmt.Errorf("%w: iat missing", ErrMalformed)
	case c.Orig.TN == "":
		return fmt.Errorf("%w: orig missing", ErrMalformed)
	case len(c.Dest.TN) == 0:
		return fmt.Errorf("%w: dest missing", ErrMalformed)
	case c.OrigID == "":
		return fmt.Errorf("%w: origid missing", ErrMalformed)
	case c.Device == "":
		return fmt.Errorf("%w: dev missing", ErrMalformed)
	case c.Counter == 0:
		// Counters start at 1 so that a missing ctr, which decodes as 0,
		// is never mistaken for one.
		return fmt.Errorf("%w: ctr missing", ErrMalformed)
	case c.CallBinding == "":
		return fmt.Errorf("%w: cb missing", ErrMalformed)
	case !c.Verdict.valid():
		return fmt.Errorf("%w: vrd %q is not allowed or observed", ErrMalformed, c.Verdict)
	case c.Verdict == Observed && len(c.Rules) == 0:
		return fmt.Errorf("%w: vrd observed without rules", ErrMalformed)
	}
	return nil
}

// NewOrigID returns a random (version 4) UUID for the origid claim.
func NewOrigID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails: crypto/rand aborts the program instead
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&0x0f])
	}
	return string(out)
}

// marshal is encoding/json without the HTML escaping of '<', '>' and '&'
// (meant for script tags, not for tokens) and without the trailing line
// feed: no whitespace anywhere, as RFC 8225 section 9 asks.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}
