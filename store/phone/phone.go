// Package phone turns the many ways a PBX writes a telephone number (SIP and
// tel URIs, national dialling forms, formatted strings) into one E.164 key, so
// that usage and consent records about the same number always meet, and masks
// numbers so they can be logged without leaking them.
//
// Errors never carry the number: they end up in logs, which is exactly where
// the number must not appear.
package phone

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrNotE164 is returned when the input cannot be turned into an E.164 number.
var ErrNotE164 = errors.New("not an E.164 number")

// The reasons are fixed values rather than fmt.Errorf calls at the failure site
// because rejected inputs ("anonymous", extensions, feature codes) are common
// on the SIP path and should not allocate; being static also guarantees that
// no part of the input leaks into an error message.
var (
	errNoDigits    = fmt.Errorf("%w: no digits", ErrNotE164)
	errBadChar     = fmt.Errorf("%w: contains a character that is not a digit or separator", ErrNotE164)
	errTooShort    = fmt.Errorf("%w: fewer than 8 digits", ErrNotE164)
	errTooLong     = fmt.Errorf("%w: more than 15 digits", ErrNotE164)
	errZeroCC      = fmt.Errorf("%w: country code starts with 0", ErrNotE164)
	errNoCountry   = fmt.Errorf("%w: national number without a default country", ErrNotE164)
	errBadDefault  = fmt.Errorf("%w: default country is not a 1-3 digit calling code", ErrNotE164)
	errNotNANPLike = fmt.Errorf("%w: not a 10-digit NANP number", ErrNotE164)
)

const (
	// minDigits keeps PBX extensions and short codes ("1001", "112") out while
	// still admitting the shortest real E.164 numbers.
	minDigits = 8
	maxDigits = 15 // ITU-T E.164

	// maxRaw leaves room for the longest dialling prefix ("011") in front of a
	// full-length number before the input is rejected as too long.
	maxRaw = maxDigits + 3
)

// Normalize returns raw as an E.164 number ("+15551234567").
//
// defaultCountry is the calling code ("1", "44"; a leading "+" is tolerated)
// used for numbers written without an international prefix; when it is empty
// such numbers are rejected. URI parameters, including ";ext=" and
// ";phone-context=", are ignored: the record is about the subscriber number,
// and a local number is always read in defaultCountry. Every error wraps
// ErrNotE164.
func Normalize(raw, defaultCountry string) (string, error) {
	// Records are looked up by their already-normalised key far more often
	// than they are created, so the canonical form returns without allocating.
	if isE164(raw) {
		return raw, nil
	}

	var buf [maxRaw]byte
	n, plus, err := collectDigits(numberPart(raw), &buf)
	if err != nil {
		return "", err
	}
	digits := buf[:n]
	cc := strings.TrimPrefix(defaultCountry, "+")

	var prefix string // country code to prepend to a national number
	switch {
	case plus:
	case n >= 2 && digits[0] == '0' && digits[1] == '0':
		digits = digits[2:]
	case cc == "1" && n >= 3 && string(digits[:3]) == "011":
		digits = digits[3:]
	case cc == "":
		return "", errNoCountry
	case !validCC(cc):
		return "", errBadDefault
	case cc == "1":
		// NANP has no trunk 0; a national number is exactly ten digits,
		// optionally behind the trunk "1", and area codes start at 2.
		switch {
		case n == 11 && digits[0] == '1' && digits[1] >= '2':
		case n == 10 && digits[0] >= '2':
			prefix = cc
		default:
			return "", errNotNANPLike
		}
	default:
		if digits[0] == '0' {
			digits = digits[1:] // trunk prefix
		}
		prefix = cc
	}

	total := len(prefix) + len(digits)
	switch {
	case total < minDigits:
		return "", errTooShort
	case total > maxDigits:
		return "", errTooLong
	}
	var out [1 + maxDigits]byte
	out[0] = '+'
	copy(out[1+copy(out[1:], prefix):], digits)
	if out[1] == '0' {
		return "", errZeroCC
	}
	return string(out[:1+total]), nil
}

// isE164 reports whether s is already in canonical form.
func isE164(s string) bool {
	if len(s) < 1+minDigits || len(s) > 1+maxDigits || s[0] != '+' || s[1] == '0' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func validCC(cc string) bool {
	if len(cc) == 0 || len(cc) > 3 || cc[0] == '0' {
		return false
	}
	for i := 0; i < len(cc); i++ {
		if cc[i] < '0' || cc[i] > '9' {
			return false
		}
	}
	return true
}

// numberPart cuts the dialled number out of a name-addr, SIP/tel URI or plain
// string. It never rejects anything itself: whatever is left is validated
// character by character, so leftovers such as a host name fail as letters.
func numberPart(s string) string {
	s = strings.TrimSpace(s)
	// The last '<' is used because a quoted display name may contain one.
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		s = s[i+1:]
		if j := strings.IndexByte(s, '>'); j >= 0 {
			s = s[:j]
		}
		s = strings.TrimSpace(s)
	}
	sip := false
	switch {
	case hasPrefixFold(s, "sip:"):
		s, sip = s[4:], true
	case hasPrefixFold(s, "sips:"):
		s, sip = s[5:], true
	case hasPrefixFold(s, "tel:"):
		s = s[4:]
	}
	if i := strings.IndexByte(s, '@'); i >= 0 {
		s = s[:i]
	}
	// A ':' only has a meaning (password, or port of a user-less URI) in SIP;
	// elsewhere it is left in so that it is rejected.
	cut := ";?"
	if sip {
		cut = ";?:"
	}
	if i := strings.IndexAny(s, cut); i >= 0 {
		s = s[:i]
	}
	return s
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// collectDigits copies the digits of s into buf, percent-decoding on the fly
// so no decoded copy of the input is made. plus reports a leading '+'.
func collectDigits(s string, buf *[maxRaw]byte) (n int, plus bool, err error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) {
				return 0, false, errBadChar
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return 0, false, errBadChar
			}
			// A decoded '%' falls through to the default case below, so
			// double encoding is rejected rather than decoded twice.
			c = hi<<4 | lo
			i += 2
		}
		switch c {
		case '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			if n == len(buf) {
				return 0, false, errTooLong
			}
			buf[n] = c
			n++
		case '+':
			if plus || n > 0 {
				return 0, false, errBadChar
			}
			plus = true
		case '(':
			// "+44 (0)20 7946 0000" marks a trunk 0 that is only dialled
			// nationally; keeping it would give a different, invalid key.
			if plus && n > 0 && strings.HasPrefix(s[i+1:], "0)") {
				i += 2
			}
		case ' ', '\t', '-', '.', ')', '/':
		default:
			// Letters, '*', '#', pause characters and extensions ("x22")
			// all mean this is not a plain subscriber number.
			return 0, false, errBadChar
		}
	}
	if n == 0 {
		return 0, false, errNoDigits
	}
	return n, plus, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Mask hides the middle of a number for logs: "+15551234567" -> "+1555***4567".
//
// It accepts any string, counts in characters rather than bytes so that it
// never splits a UTF-8 sequence, and always hides at least three characters of
// anything longer than two: strings shorter than 9 keep only their last 2, and
// for short numbers the leading part shrinks rather than the mask, so that
// "+12345678" does not come out with every digit still visible. An input that
// already looks masked may come back unchanged; it reveals nothing more.
func Mask(s string) string {
	n := utf8.RuneCountInString(s)
	switch {
	case n == 0:
		return ""
	case n <= 2:
		return "***"
	case n < 9:
		return "***" + lastRunes(s, 2)
	}
	head := 4
	if s[0] == '+' {
		head = 5
	}
	head = min(head, n-4-3)
	return firstRunes(s, head) + "***" + lastRunes(s, 4)
}

func firstRunes(s string, k int) string {
	i := 0
	for ; k > 0 && i < len(s); k-- {
		_, w := utf8.DecodeRuneInString(s[i:])
		i += w
	}
	return s[:i]
}

func lastRunes(s string, k int) string {
	i := len(s)
	for ; k > 0 && i > 0; k-- {
		_, w := utf8.DecodeLastRuneInString(s[:i])
		i -= w
	}
	return s[i:]
}

// Variants returns the spellings under which a number may appear in stored
// bytes, so that a scan for leaks looks for all of them: E.164 with and
// without '+', the national form for defaultCountry (trunk "0" outside NANP)
// and SIP URI users ("sip:+15551234567@", "sip:5551234567@").
//
// e164 is normalised first, so any form Normalize accepts will do; the result
// is nil if it cannot be. The national forms are only included when the
// number belongs to defaultCountry.
func Variants(e164, defaultCountry string) []string {
	num, err := Normalize(e164, defaultCountry)
	if err != nil {
		return nil
	}
	digits := num[1:]
	vs := make([]string, 0, 5)
	add := func(v string) {
		for _, x := range vs {
			if x == v {
				return
			}
		}
		vs = append(vs, v)
	}
	add(num)
	add(digits)
	national := ""
	if cc := strings.TrimPrefix(defaultCountry, "+"); validCC(cc) && strings.HasPrefix(digits, cc) {
		national = digits[len(cc):]
		if cc != "1" {
			national = "0" + national
		}
		add(national)
	}
	add("sip:" + num + "@")
	if national != "" {
		add("sip:" + national + "@")
	}
	return vs
}
