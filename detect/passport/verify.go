package passport

import (
	"crypto/ecdsa"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Defaults for a zero Verifier.
const (
	// DefaultWindow is how far iat may be from the verifier's clock either
	// way: enough for clocks a little apart and a slow hop or two, short
	// enough that a lifted token is soon worthless.
	DefaultWindow = 60 * time.Second
	// DefaultMaxKeys is how many device keys a Verifier keeps counters
	// for, about 400 bytes each.
	DefaultMaxKeys = 1 << 16
)

// Verifier checks the Identity of requests coming from agents: the token,
// its freshness, that it was made for this very call, and that its
// counter was not used before. The zero value is ready to use; it is safe
// for concurrent use and must not be copied after first use.
//
// Counters are kept per key (not per dev claim, which the signer chooses:
// one device's key must not be able to use up another's counters), up to
// MaxKeys keys; see ReplayWindow for what each key remembers.
type Verifier struct {
	// Window is how far iat may be from Now, either way. Zero means
	// DefaultWindow. iat is in whole seconds, so a token may be up to a
	// second younger than it looks.
	Window time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxKeys caps the keys tracked; zero means DefaultMaxKeys. When it
	// is reached, a key idle for twice the Window is forgotten to make
	// room, and if there is none a new key is refused with ErrCapacity:
	// size it above the fleet.
	MaxKeys int
	// Number turns a user part taken from the request into the form the
	// device signed, before both are canonicalised: for example a PBX that
	// sends national numbers needs the E.164 form the agent signs (the
	// agent's store/phone Normalize with the device's default country).
	// nil uses the user part as it is.
	Number func(user string) string

	mu      sync.Mutex // guards replays
	replays replays
}

// Expect is what a token must say to belong to a request.
type Expect struct {
	// Orig is the caller's number as the request presents it.
	Orig string
	// Dest are the numbers the request is for; a dest claim matching any
	// of them will do.
	Dest []string
	// CallID and FromTag are what the cb claim binds (see Binding).
	CallID, FromTag string
}

// ExpectRequest is what a token must say to belong to req: the caller from
// P-Asserted-Identity when present, else From; the called number from the
// Request-URI, and from To; Call-ID and the From tag for the binding. User
// parts of sip:, sips: and tel: URIs are taken, without their parameters,
// percent-escapes undone.
func ExpectRequest(req *sip.Request) Expect {
	var e Expect
	if h := header(req, "P-Asserted-Identity", ""); h != nil {
		e.Orig = firstAddressNumber(h.Value())
	}
	if f := req.From(); f != nil {
		if e.Orig == "" {
			e.Orig = uriNumber(&f.Address)
		}
		e.FromTag, _ = f.Params.Get("tag")
	}
	if n := uriNumber(&req.Recipient); n != "" {
		e.Dest = append(e.Dest, n)
	}
	if t := req.To(); t != nil {
		if n := uriNumber(&t.Address); n != "" {
			e.Dest = append(e.Dest, n)
		}
	}
	if c := req.CallID(); c != nil {
		e.CallID = strings.TrimSpace(c.Value())
	}
	return e
}

// Verify checks the first Identity header of req against pub, the key
// enrolled for the device that relayed it, and returns the claims. Each
// failure matches one of the package's errors: ErrNoIdentity,
// ErrMalformed, ErrAlgorithm, ErrUnsupported, ErrSignature, ErrStale,
// ErrFuture, ErrOrig, ErrDest, ErrBinding, ErrReplay, ErrCapacity, or
// ErrKeyType for a pub that is not P-256.
//
// Only the first header is read, as kamailio's secsipid module does: the
// agent puts its own first.
//
// Verify does not compare Claims.Device with the device pub was enrolled
// for; a caller that picked pub by the info URI should.
func (v *Verifier) Verify(req *sip.Request, pub *ecdsa.PublicKey) (*Claims, error) {
	h := header(req, "Identity", "y")
	if h == nil {
		return nil, ErrNoIdentity
	}
	id, err := ParseIdentity(h.Value())
	if err != nil {
		return nil, err
	}
	return v.VerifyIdentity(id, pub, ExpectRequest(req))
}

// VerifyIdentity is Verify for a header value already parsed and what the
// call must match already known. Besides the token, it checks the header
// parameters: alg, when present, must be ES256, no ppt, and the token's
// x5u, when present, must be the info URI.
func (v *Verifier) VerifyIdentity(id Identity, pub *ecdsa.PublicKey, want Expect) (*Claims, error) {
	if id.Alg != "" && id.Alg != AlgES256 {
		return nil, fmt.Errorf("%w: alg parameter %q", ErrAlgorithm, id.Alg)
	}
	if id.PPT != "" {
		return nil, fmt.Errorf("%w: ppt parameter", ErrUnsupported)
	}
	h, c, err := Parse(id.Token, pub)
	if err != nil {
		return nil, err
	}
	if h.X5U != "" && h.X5U != id.Info {
		return nil, fmt.Errorf("%w: x5u is not the info URI", ErrMalformed)
	}
	if err := v.check(c, pub, want); err != nil {
		return nil, err
	}
	return c, nil
}

// VerifyToken checks a bare token: Parse, then what VerifyIdentity checks
// of the claims (time, orig, dest, binding, counter).
func (v *Verifier) VerifyToken(token string, pub *ecdsa.PublicKey, want Expect) (*Claims, error) {
	_, c, err := Parse(token, pub)
	if err != nil {
		return nil, err
	}
	if err := v.check(c, pub, want); err != nil {
		return nil, err
	}
	return c, nil
}

// check holds verified claims to the call and the clock, then records the
// counter: last, so that a token refused for another reason does not use
// its counter up.
func (v *Verifier) check(c *Claims, pub *ecdsa.PublicKey, want Expect) error {
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	window := v.Window
	if window <= 0 {
		window = DefaultWindow
	}
	age := now.Sub(time.Unix(c.IssuedAt, 0))
	switch {
	case age > window:
		return fmt.Errorf("%w: issued %s ago, window %s", ErrStale, age.Round(time.Second), window)
	case -age > window:
		return fmt.Errorf("%w: issued %s ahead, window %s", ErrFuture, (-age).Round(time.Second), window)
	}

	orig, err := Canonical(c.Orig.TN)
	if err != nil {
		return fmt.Errorf("%w: orig claim: %w", ErrMalformed, err)
	}
	caller, err := Canonical(v.number(want.Orig))
	if err != nil {
		return fmt.Errorf("%w: request's caller: %w", ErrOrig, err)
	}
	if orig != caller {
		return fmt.Errorf("%w: signed for another caller", ErrOrig)
	}
	if err := v.matchDest(c.Dest.TN, want.Dest); err != nil {
		return err
	}
	if want.CallID == "" {
		return fmt.Errorf("%w: request has no Call-ID", ErrBinding)
	}
	if c.CallBinding != Binding(want.CallID, want.FromTag) {
		return fmt.Errorf("%w: signed for another Call-ID or From tag", ErrBinding)
	}

	pt, err := pub.Bytes()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKeyType, err)
	}
	limit := v.MaxKeys
	if limit <= 0 {
		limit = DefaultMaxKeys
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.replays.accept(string(pt), c.Counter, now, window, limit); err != nil {
		return err
	}
	return nil
}

func (v *Verifier) matchDest(claims, want []string) error {
	for _, d := range claims {
		dest, err := Canonical(d)
		if err != nil {
			return fmt.Errorf("%w: dest claim: %w", ErrMalformed, err)
		}
		for _, w := range want {
			if cw, err := Canonical(v.number(w)); err == nil && cw == dest {
				return nil
			}
		}
	}
	if len(want) == 0 {
		return fmt.Errorf("%w: request names no called number", ErrDest)
	}
	return fmt.Errorf("%w: signed for another called number", ErrDest)
}

func (v *Verifier) number(user string) string {
	if v.Number != nil && user != "" {
		return v.Number(user)
	}
	return user
}

// header is the first header called name or, when short is set, by its
// compact form. sipgo's GetHeader lower-cases names, allocating for those
// it does not know; this does not.
func header(req *sip.Request, name, short string) sip.Header {
	for _, h := range req.Headers() {
		if n := h.Name(); strings.EqualFold(n, name) || short != "" && strings.EqualFold(n, short) {
			return h
		}
	}
	return nil
}

// firstAddressNumber is the number in the first entry of a header such as
// P-Asserted-Identity, which may hold a sip: and a tel: URI; the first is
// the one presented.
func firstAddressNumber(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return ""
		}
		v = v[i+1 : i+j]
	} else if i := strings.IndexAny(v, ",;"); i >= 0 {
		// Without angle brackets, ';' starts header parameters.
		v = v[:i]
	}
	var u sip.Uri
	if err := sip.ParseUri(strings.TrimSpace(v), &u); err != nil {
		return ""
	}
	return uriNumber(&u)
}

// uriNumber is the user part of a sip:/sips: URI or the number of a tel:
// URI, without parameters (";npdi", ";phone-context=..."), escapes undone
// (phones send '*' and '#' as %2A and %23).
func uriNumber(u *sip.Uri) string {
	var user string
	switch strings.ToLower(u.Scheme) {
	case "sip", "sips":
		user = u.User
	case "tel":
		user = u.Raw()
	default:
		return ""
	}
	if i := strings.IndexByte(user, ';'); i >= 0 {
		user = user[:i]
	}
	if strings.IndexByte(user, '%') >= 0 {
		if un, err := url.PathUnescape(user); err == nil {
			user = un
		}
	}
	return user
}
