package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	gosync "sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/passport"
	"github.com/leadport/leadport-agent/store"
	lpsync "github.com/leadport/leadport-agent/sync"
)

// IdentityKeyFile is the call-signing key's file in the data directory:
// apart from the device key (which seals personal data), and never
// touched by an erase, so that a decommissioning erase does not unenrol
// the device.
const IdentityKeyFile = "identity.key"

// counterName is the store's counter behind the ctr claim.
const counterName = "passport"

// counterRange is how many counter values one store write reserves: a
// write (an fsync) every 4,096 calls, and at most that many values skipped
// by a crash.
const counterRange = 4096

// freshness is how far a request's own Date may be from the agent's clock
// to be kept as the token's iat; verifiers refuse tokens older than about
// a minute (RFC 8224 section 6.2.1 recommends 60 s).
const freshness = 60 * time.Second

// callSigner puts the agent's Identity on the calls the rules let out
// (detect.CallSigner): a PASSporT signed with the device's call-signing
// key, carrying the device, a counter that never repeats, the policy in
// force and the verdict.
type callSigner struct {
	deviceID string
	policy   func() int64
	counter  *counterBlock
	clock    *upstreamClock

	mu   gosync.RWMutex // guards the fields that follow
	key  *passport.FileKey
	kid  string
	info string
}

func newCallSigner(dataDir, deviceID string, st *store.Store, policy func() int64, log *slog.Logger) (*callSigner, error) {
	key, created, err := passport.LoadOrCreateKey(filepath.Join(dataDir, IdentityKeyFile))
	if err != nil {
		return nil, fmt.Errorf("call-signing key: %w", err)
	}
	s := &callSigner{deviceID: deviceID, policy: policy, counter: &counterBlock{store: st}, clock: &upstreamClock{}}
	s.setKey(key)
	if created {
		log.Info("created the call-signing key: enrol its public key with the platform (leadport-agent identity)", "kid", s.kid, "path", key.Path())
	}
	return s, nil
}

func (s *callSigner) setKey(k *passport.FileKey) {
	kid := passport.Thumbprint(k.PublicKey())
	s.mu.Lock()
	s.key, s.kid, s.info = k, kid, InfoURI(kid)
	s.mu.Unlock()
}

// InfoURI is the info parameter (and x5u) naming a key: a URN of its
// thumbprint, which the platform maps to the enrolled key. It holds no ';'
// or '=', which stock verifiers split headers at.
func InfoURI(kid string) string { return "urn:leadport:key:" + kid }

// rotate makes a new key, in place of the old one, which signs nothing
// once rotate has returned.
func (s *callSigner) rotate() (*passport.FileKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := passport.Rotate(s.key.Path())
	if err != nil {
		return nil, err
	}
	s.key, s.kid = k, passport.Thumbprint(k.PublicKey())
	s.info = InfoURI(s.kid)
	return k, nil
}

// Identity is the document that names the call-signing key (sync owns
// the contract).
type Identity = lpsync.Identity

// IdentityOf describes a key of the device.
func IdentityOf(deviceID string, k *passport.FileKey) Identity {
	kid := passport.Thumbprint(k.PublicKey())
	return Identity{
		DeviceID: deviceID, KeyID: kid, Alg: passport.AlgES256,
		PublicKey: string(passport.PublicKeyPEM(k.PublicKey())),
		Info:      InfoURI(kid), CreatedAt: k.Created().UTC(),
	}
}

func (s *callSigner) identity() Identity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return IdentityOf(s.deviceID, s.key)
}

// SignCall implements detect.CallSigner.
func (s *callSigner) SignCall(req *sip.Request, line string, v detect.Verdict) error {
	now := s.clock.Now()
	iat := now
	// RFC 8224 section 4: iat and Date agree. A Date the PBX set is kept
	// when it is fresh; a stale one is replaced rather than the call
	// refused, since the agent vouches for the call, not for the PBX's
	// clock.
	if h := req.GetHeader("Date"); h != nil {
		if t, err := http.ParseTime(h.Value()); err == nil && t.Sub(now).Abs() <= freshness/2 {
			iat = t
		} else {
			req.RemoveHeader(h.Name())
			h = nil
		}
		if h == nil {
			req.AppendHeader(sip.NewHeader("Date", now.UTC().Format(http.TimeFormat)))
		}
	} else {
		req.AppendHeader(sip.NewHeader("Date", now.UTC().Format(http.TimeFormat)))
	}
	ctr, err := s.counter.take()
	if err != nil {
		return err
	}
	// The numbers as the platform's verifier reads them from the request
	// (P-Asserted-Identity, else From; the Request-URI), so that both
	// sides agree on parameters and escapes.
	want := passport.ExpectRequest(req)
	orig := want.Orig
	if orig == "" {
		orig = line
	}
	dest := want.Dest
	if len(dest) > 1 {
		dest = dest[:1] // the Request-URI's
	}
	c := passport.Claims{
		CallBinding: passport.Binding(want.CallID, want.FromTag),
		Counter:     ctr,
		Dest:        passport.Dest{TN: dest},
		Device:      s.deviceID,
		IssuedAt:    iat.Unix(),
		Orig:        passport.Orig{TN: orig},
		OrigID:      passport.NewOrigID(),
		Policy:      int(s.policy()),
		Verdict:     passport.Allowed,
	}
	if len(v.Observed) > 0 {
		c.Verdict, c.Rules = passport.Observed, slices.Clone(v.Observed)
	}
	s.mu.RLock()
	key, info := s.key, s.info
	token, err := passport.Sign(key, passport.Header{X5U: info}, c)
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	req.AppendHeader(sip.NewHeader("Identity", passport.IdentityHeader(token, info)))
	return nil
}

// UpstreamDate implements detect.CallSigner.
func (s *callSigner) UpstreamDate(date string, received time.Time) {
	s.clock.observe(date, received)
}

// counterBlock hands out the ctr claim's values from a range reserved in
// the store, reserving the next range when one runs out: values never
// repeat, across restarts and SIGKILL.
type counterBlock struct {
	store *store.Store

	mu        gosync.Mutex // guards next and end
	next, end uint64
}

func (c *counterBlock) take() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next == c.end {
		first, err := c.store.ReserveCounter(counterName, counterRange)
		if err != nil {
			return 0, err
		}
		c.next, c.end = first, first+counterRange
	}
	v := c.next
	c.next++
	return v, nil
}

// upstreamClock keeps the agent's tokens on the Leadport edge's clock:
// verifiers refuse tokens more than a minute off theirs, and devices
// drift. It estimates the offset from the Date headers of the upstream's
// responses (the OPTIONS pings, REGISTER and INVITE answers): the median
// of the last samples, each the Date (whole seconds, so taken at its
// middle) less the arrival time.
type upstreamClock struct {
	mu      gosync.Mutex // guards the fields that follow
	samples [15]time.Duration
	n, i    int
	offset  time.Duration // applied: the median, when over a second
	median  time.Duration
	last    time.Time
}

// errNoDate is a Date header that does not parse.
var errNoDate = errors.New("not an HTTP date")

func (c *upstreamClock) observe(date string, received time.Time) error {
	t, err := http.ParseTime(date)
	if err != nil {
		return errNoDate
	}
	d := t.Add(500 * time.Millisecond).Sub(received)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.samples[c.i] = d
	c.i = (c.i + 1) % len(c.samples)
	if c.n < len(c.samples) {
		c.n++
	}
	sorted := slices.Clone(c.samples[:c.n])
	slices.Sort(sorted)
	c.median = sorted[len(sorted)/2]
	// Below a second the estimate is the Date's own rounding.
	c.offset = 0
	if c.median.Abs() > time.Second {
		c.offset = c.median
	}
	c.last = received
	return nil
}

// Now is the time on the upstream's clock, as well as the agent knows it.
func (c *upstreamClock) Now() time.Time {
	c.mu.Lock()
	off := c.offset
	c.mu.Unlock()
	return time.Now().Add(off)
}

func (c *upstreamClock) status() lpsync.Clock {
	c.mu.Lock()
	defer c.mu.Unlock()
	return lpsync.Clock{OffsetS: c.median.Seconds(), Samples: c.n, LastAt: c.last}
}

func (a *Agent) identityStatus() lpsync.IdentityStatus {
	st := lpsync.IdentityStatus{Identity: a.signer.identity(), Clock: a.signer.clock.status()}
	if a.proxy != nil && a.cfg.SIP.Identity == config.IdentitySign {
		ps := a.proxy.Stats()
		st.Signing, st.Signed, st.SignErrors = true, ps.Signed, ps.SignErrors
		if ps.Signed > 0 {
			st.SignUSMean = float64(ps.SignTime.Microseconds()) / float64(ps.Signed)
		}
	}
	return st
}
