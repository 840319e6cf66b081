package rules

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// headerValues calls f with each comma-separated entry of every header
// called name, in order, without allocating; f returns false to stop.
func headerValues(m interface{ Headers() []sip.Header }, name string, f func(v string) bool) {
	for _, h := range m.Headers() {
		if !strings.EqualFold(h.Name(), name) {
			continue
		}
		if !splitEntries(h.Value(), f) {
			return
		}
	}
}

// splitEntries splits a header value at the commas that separate entries,
// not those inside <...> or a quoted display name.
func splitEntries(v string, f func(string) bool) bool {
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			depth++
		case c == '>':
			if depth > 0 {
				depth--
			}
		case c == ',' && depth == 0:
			if e := strings.TrimSpace(v[start:i]); e != "" && !f(e) {
				return false
			}
			start = i + 1
		}
	}
	if e := strings.TrimSpace(v[start:]); e != "" {
		return f(e)
	}
	return true
}

// addrSpec returns the URI of a name-addr ("Name" <sip:u@h;p>;x=y) or of a
// bare addr-spec, and the header parameters after it.
func addrSpec(entry string) (uri, params string) {
	if i := strings.IndexByte(entry, '<'); i >= 0 {
		rest := entry[i+1:]
		if j := strings.IndexByte(rest, '>'); j >= 0 {
			return rest[:j], rest[j+1:]
		}
		return rest, ""
	}
	// addr-spec: parameters after it belong to the header (RFC 3261 20).
	if i := strings.IndexByte(entry, ';'); i >= 0 {
		return strings.TrimSpace(entry[:i]), entry[i:]
	}
	return strings.TrimSpace(entry), ""
}

// uriUser is the user part of a sip:, sips: or tel: URI.
func uriUser(uri string) string {
	if i := strings.IndexByte(uri, ':'); i >= 0 {
		uri = uri[i+1:]
	}
	if i := strings.IndexAny(uri, "@;?"); i >= 0 {
		uri = uri[:i]
	}
	return uri
}

// hasCause reports whether a History-Info target names a retargeting cause:
// the cause URI parameter (RFC 4458) or an escaped Reason header in it
// (RFC 7044 10.1).
func hasCause(uri string) bool {
	lower := func(s string) bool {
		for i := 0; i+len(s) <= len(uri); i++ {
			if strings.EqualFold(uri[i:i+len(s)], s) {
				return true
			}
		}
		return false
	}
	return lower(";cause=") || lower("?reason=") || lower("&reason=")
}

// paramValue is the value of a ;name=value parameter in params.
func paramValue(params, name string) string {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, name) {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// dialled is a Request-URI user as dialled: the escapes phones use for *
// and # undone.
func dialled(user string) string {
	if !strings.Contains(user, "%") {
		return user
	}
	r := strings.NewReplacer("%2A", "*", "%2a", "*", "%23", "#")
	return r.Replace(user)
}

// identities are the numbers an outbound request presents.
type identities struct {
	from, pai, rpid string
}

func presented(req *sip.Request) identities {
	var id identities
	if f := req.From(); f != nil {
		id.from = f.Address.User
	}
	if h := header(req, "P-Asserted-Identity"); h != nil {
		id.pai = firstUser(h.Value())
	}
	if h := header(req, "Remote-Party-ID"); h != nil {
		id.rpid = firstUser(h.Value())
	}
	return id
}

// firstUser is the user of the first entry of a header value; a P-Asserted-
// Identity may carry a sip: and a tel: URI, the first is enough.
func firstUser(v string) string {
	var user string
	splitEntries(v, func(e string) bool {
		u, _ := addrSpec(e)
		user = uriUser(u)
		return false
	})
	return user
}

// anonymous are the user parts that withhold an identity rather than
// present another one (RFC 3323 and common practice).
func anonymous(user string) bool {
	switch strings.ToLower(user) {
	case "", "anonymous", "unknown", "restricted", "private", "unavailable":
		return true
	}
	return false
}

// header is the first header called name. sipgo's GetHeader lower-cases
// names, allocating for those it does not know; this does not.
func header(m interface{ Headers() []sip.Header }, name string) sip.Header {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return h
		}
	}
	return nil
}
