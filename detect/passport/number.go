package passport

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// Canonical is a telephone number in the form RFC 8224 section 8.3 signs:
// visual separators ('-', '.', '(', ')') and spaces dropped, a leading '+'
// dropped, and then nothing left but the digits 0-9, '*' and '#'.
// "+1 (555) 123-4567" becomes "15551234567".
//
// It does not turn a national number into an international one: the
// signer and the verifier must agree on which they use, and the agent
// signs E.164 numbers. Anything else (letters, a '+' inside the number,
// nothing at all) is ErrNotNumber.
func Canonical(tn string) (string, error) {
	if canonical(tn) {
		return tn, nil
	}
	out := make([]byte, 0, len(tn))
	lead := true
	for i := 0; i < len(tn); i++ {
		c := tn[i]
		switch {
		case c == '-' || c == '.' || c == '(' || c == ')' || c == ' ':
			continue
		case c == '+' && lead:
			lead = false
			continue
		case isDialChar(c):
			out = append(out, c)
		default:
			return "", fmt.Errorf("%w: character %q", ErrNotNumber, c)
		}
		lead = false
	}
	if len(out) == 0 {
		return "", fmt.Errorf("%w: no digits", ErrNotNumber)
	}
	return string(out), nil
}

// canonical reports whether tn needs no change, so the common case of an
// already canonical claim costs no allocation.
func canonical(tn string) bool {
	if tn == "" {
		return false
	}
	for i := 0; i < len(tn); i++ {
		if !isDialChar(tn[i]) {
			return false
		}
	}
	return true
}

func isDialChar(c byte) bool {
	return c >= '0' && c <= '9' || c == '*' || c == '#'
}

// Binding is the cb claim: the base64url encoding, without padding, of
// SHA-256 over the Call-ID, a line feed, and the From tag:
//
//	cb = BASE64URL(SHA-256(Call-ID || "\n" || From-tag))
//
// Call-ID is the header value as sent, surrounding whitespace removed;
// From-tag is the value of the tag parameter of From, as sent. Both are
// compared byte for byte (RFC 3261 compares Call-IDs that way). The
// binding ties a token to one dialog, so a token lifted from one call
// cannot be pasted into another within the freshness window; the line
// feed keeps ("ab","c") and ("a","bc") apart, as neither value may hold
// one.
func Binding(callID, fromTag string) string {
	h := sha256.New()
	h.Write([]byte(callID))
	h.Write([]byte{'\n'})
	h.Write([]byte(fromTag))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
