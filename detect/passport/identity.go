package passport

import (
	"fmt"
	"strings"
)

// Identity is an Identity header value (RFC 8224 section 4):
//
//	token ;info=<URI> [;alg=ES256] [;ppt=...] *(;name[=value])
type Identity struct {
	// Token is the compact JWS.
	Token string
	// Info is the URI of the info parameter, without its angle brackets:
	// where the verifier finds the key (for the agent, the URI naming the
	// device's enrolled key).
	Info string
	// Alg is the alg parameter, "" when absent (RFC 8224 then assumes
	// ES256).
	Alg string
	// PPT is the ppt parameter as written (a token or a quoted string), ""
	// when absent.
	PPT string
	// Params are the other parameters in the order written, names in
	// lower case (SIP parameter names are case-insensitive).
	Params []Param
}

// Param is a generic header parameter. Value is as written, a quoted
// string with its quotes; "" for a parameter without a value.
type Param struct {
	Name, Value string
}

// IdentityHeader is the value of the Identity header the agent adds:
// the token, the info parameter naming the device's key, and alg=ES256.
// info must be an absolute URI, the same as the x5u the token was signed
// with; Sign documents what it may contain.
func IdentityHeader(token, info string) string {
	return token + ";info=<" + info + ">;alg=" + AlgES256
}

// String writes id back as a header value; ParseIdentity reads it back to
// the same Identity.
func (id Identity) String() string {
	var b strings.Builder
	b.WriteString(id.Token)
	b.WriteString(";info=<")
	b.WriteString(id.Info)
	b.WriteByte('>')
	if id.Alg != "" {
		b.WriteString(";alg=")
		b.WriteString(id.Alg)
	}
	if id.PPT != "" {
		b.WriteString(";ppt=")
		b.WriteString(id.PPT)
	}
	for _, p := range id.Params {
		b.WriteByte(';')
		b.WriteString(p.Name)
		if p.Value != "" {
			b.WriteByte('=')
			b.WriteString(p.Value)
		}
	}
	return b.String()
}

// ParseIdentity parses an Identity header value. It takes whitespace
// around ';' and '=' and parameters in any order; it refuses what the
// grammar does not allow, a missing or repeated info, alg or ppt, and a
// token that is not three base64url segments. Every failure is
// ErrMalformed with the reason.
//
// It does not judge the values: whether alg is ES256 or a ppt is
// acceptable is the verifier's business.
func ParseIdentity(value string) (Identity, error) {
	var id Identity
	s := trimLWS(value)
	end := strings.IndexByte(s, ';')
	if end < 0 {
		end = len(s)
	}
	id.Token = trimLWS(s[:end])
	if err := checkToken(id.Token); err != nil {
		return Identity{}, err
	}
	s = s[end:]
	var haveInfo, haveAlg, havePPT bool
	for s != "" {
		// s starts with ';' here: the loop below leaves it so.
		s = trimLeftLWS(s[1:])
		n := 0
		for n < len(s) && isTokenChar(s[n]) {
			n++
		}
		if n == 0 {
			return Identity{}, malformed("parameter without a name")
		}
		name := strings.ToLower(s[:n])
		s = trimLeftLWS(s[n:])
		var val string
		angle := false
		if s != "" && s[0] == '=' {
			var err error
			s = trimLeftLWS(s[1:])
			if val, angle, s, err = paramValue(s); err != nil {
				return Identity{}, fmt.Errorf("%w (parameter %s)", err, name)
			}
			s = trimLeftLWS(s)
		}
		if s != "" && s[0] != ';' {
			return Identity{}, malformed("unexpected %q after parameter %s", s[0], name)
		}
		if angle && name != "info" {
			return Identity{}, malformed("angle brackets in parameter %s", name)
		}
		switch name {
		case "info":
			if haveInfo {
				return Identity{}, malformed("info repeated")
			}
			if !angle {
				return Identity{}, malformed("info is not <URI>")
			}
			if err := checkURI(val); err != nil {
				return Identity{}, err
			}
			haveInfo, id.Info = true, val
		case "alg":
			if haveAlg {
				return Identity{}, malformed("alg repeated")
			}
			if val == "" || val[0] == '"' {
				return Identity{}, malformed("alg is not a token")
			}
			haveAlg, id.Alg = true, val
		case "ppt":
			if havePPT {
				return Identity{}, malformed("ppt repeated")
			}
			if val == "" {
				return Identity{}, malformed("ppt without a value")
			}
			havePPT, id.PPT = true, val
		default:
			id.Params = append(id.Params, Param{Name: name, Value: val})
		}
	}
	if !haveInfo {
		return Identity{}, malformed("no info parameter")
	}
	return id, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// paramValue reads a gen-value (RFC 3261: token, host or quoted string)
// or, for info, an angle-bracketed URI. It returns the rest of s.
func paramValue(s string) (val string, angle bool, rest string, err error) {
	switch {
	case s == "":
		return "", false, "", malformed("'=' without a value")
	case s[0] == '<':
		end := strings.IndexByte(s, '>')
		if end < 0 {
			return "", false, "", malformed("'<' without '>'")
		}
		return s[1:end], true, s[end+1:], nil
	case s[0] == '"':
		for i := 1; i < len(s); i++ {
			switch c := s[i]; {
			case c == '\\':
				i++ // the escaped character, whatever it is
			case c == '"':
				return s[:i+1], false, s[i+1:], nil
			case c < 0x20 && c != '\t' || c == 0x7f:
				return "", false, "", malformed("control character in quoted string")
			}
		}
		return "", false, "", malformed("unterminated quoted string")
	}
	n := 0
	for n < len(s) && (isTokenChar(s[n]) || s[n] == ':' || s[n] == '[' || s[n] == ']') {
		n++
	}
	if n == 0 {
		return "", false, "", malformed("bad character %q in value", s[0])
	}
	return s[:n], false, s[n:], nil
}

// checkToken holds the token to three base64url segments; the payload
// may be empty (compact form), which the verifier then refuses for what
// it is rather than as noise.
func checkToken(tok string) error {
	dots := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c == '.':
			dots++
		case !isB64URL(c):
			return malformed("token: character %q", c)
		}
	}
	if _, _, _, ok := segments(tok); !ok || dots != 2 {
		return malformed("token is not header.payload.signature")
	}
	return nil
}

// checkURI accepts an absolute URI as far as the header needs: a scheme,
// a colon, and printable characters that cannot end the parameter.
func checkURI(u string) error {
	colon := strings.IndexByte(u, ':')
	if colon <= 0 || colon == len(u)-1 || !isAlpha(u[0]) {
		return malformed("info is not an absolute URI")
	}
	for i := 1; i < colon; i++ {
		if c := u[i]; !isAlpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return malformed("info URI scheme")
		}
	}
	for i := colon + 1; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '"' {
			return malformed("info URI: character %q", c)
		}
	}
	return nil
}

// checkInfo holds a URI the agent puts in x5u and info to what stock
// verifiers can read back: libsecsipid (kamailio's secsipid module)
// removes all whitespace from the header, splits it at every ';' and each
// parameter at every '=', ignoring a parameter with more than one '='. A
// URI with ';' or '=' in it would lose its info parameter there.
func checkInfo(u string) error {
	if err := checkURI(u); err != nil {
		return err
	}
	if i := strings.IndexAny(u, ";=,"); i >= 0 {
		return malformed("info URI: %q breaks stock verifiers", u[i])
	}
	return nil
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isB64URL(c byte) bool {
	return isAlpha(c) || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// isTokenChar is RFC 3261's token alphabet.
func isTokenChar(c byte) bool {
	if isAlpha(c) || c >= '0' && c <= '9' {
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

func isLWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func trimLeftLWS(s string) string {
	for s != "" && isLWS(s[0]) {
		s = s[1:]
	}
	return s
}

func trimLWS(s string) string {
	s = trimLeftLWS(s)
	for s != "" && isLWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}
