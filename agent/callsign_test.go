package agent

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/passport"
	"github.com/leadport/leadport-agent/store/storetest"
)

func newTestSigner(t *testing.T) *callSigner {
	t.Helper()
	st := storetest.Open(t)
	s, err := newCallSigner(st.Dir, "pbx-1", st.Store, func() int64 { return 4 }, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func outboundInvite(id string, extra ...sip.Header) *sip.Request {
	return testInvite(id, "+15551230001", "pbx.example", "+15557654321", "edge.example", "f1", extra...)
}

func TestSignCall(t *testing.T) {
	s := newTestSigner(t)
	pub := s.identity()
	key, err := passport.ParsePublicKeyPEM([]byte(pub.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name     string
		extra    []sip.Header
		verdict  detect.Verdict
		wantIAT  time.Time // zero: about now
		wantVrd  passport.Verdict
		wantRule []string
		wantOrig string
	}{
		{name: "allowed, no Date", wantVrd: passport.Allowed},
		{name: "observed names the rules", verdict: detect.Verdict{Observed: []string{"pacing", "callerid.mismatch"}},
			wantVrd: passport.Observed, wantRule: []string{"pacing", "callerid.mismatch"}},
		{name: "a fresh Date of the PBX is the iat",
			extra:   []sip.Header{sip.NewHeader("Date", now.Add(-10*time.Second).UTC().Format(http.TimeFormat))},
			wantIAT: now.Add(-10 * time.Second), wantVrd: passport.Allowed},
		{name: "a stale Date of the PBX is replaced",
			extra:   []sip.Header{sip.NewHeader("Date", now.Add(-2*time.Minute).UTC().Format(http.TimeFormat))},
			wantVrd: passport.Allowed},
		{name: "the caller is the P-Asserted-Identity",
			extra:   []sip.Header{sip.NewHeader("P-Asserted-Identity", "\"Sales\" <sip:+15551230009@pbx.example>")},
			wantVrd: passport.Allowed, wantOrig: "15551230009"},
	}
	v := &passport.Verifier{}
	var last uint64
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := outboundInvite("call-"+string(rune('a'+i)), tt.extra...)
			if err := s.SignCall(req, "+15551230001", tt.verdict); err != nil {
				t.Fatal(err)
			}
			if n := len(req.GetHeaders("Date")); n != 1 {
				t.Fatalf("%d Date headers, want 1", n)
			}
			date, err := http.ParseTime(req.GetHeader("Date").Value())
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(req, key)
			if err != nil {
				t.Fatalf("the platform's verifier: %v\nIdentity: %s", err, req.GetHeader("Identity").Value())
			}
			if c.IssuedAt != date.Unix() {
				t.Errorf("iat %d, Date %s: they must agree", c.IssuedAt, date)
			}
			want := tt.wantIAT
			if want.IsZero() {
				want = now
			}
			if d := time.Unix(c.IssuedAt, 0).Sub(want.Truncate(time.Second)); d < -time.Second || d > 2*time.Second {
				t.Errorf("iat %s, want about %s", time.Unix(c.IssuedAt, 0), want)
			}
			if c.Device != "pbx-1" || c.Policy != 4 || c.Verdict != tt.wantVrd || !slices.Equal(c.Rules, tt.wantRule) || c.Counter <= last {
				t.Errorf("claims %+v (after counter %d)", c, last)
			}
			wantOrig := tt.wantOrig
			if wantOrig == "" {
				wantOrig = "15551230001"
			}
			if c.Orig.TN != wantOrig || len(c.Dest.TN) != 1 || c.Dest.TN[0] != "15557654321" {
				t.Errorf("orig %q dest %q, want %q and [15557654321]", c.Orig.TN, c.Dest.TN, wantOrig)
			}
			last = c.Counter
		})
	}
}

// After a rotation the old key signs nothing: a call signed afterwards
// verifies with the new key and not with the old.
func TestCallSignerRotate(t *testing.T) {
	s := newTestSigner(t)
	before := s.identity()
	oldKey, _ := passport.ParsePublicKeyPEM([]byte(before.PublicKey))
	k, err := s.rotate()
	if err != nil {
		t.Fatal(err)
	}
	after := s.identity()
	if after.KeyID == before.KeyID || after.KeyID != passport.Thumbprint(k.PublicKey()) || after.Info == before.Info {
		t.Fatalf("identity after rotation %+v, before %+v", after, before)
	}
	req := outboundInvite("after-rotation")
	if err := s.SignCall(req, "+15551230001", detect.Verdict{}); err != nil {
		t.Fatal(err)
	}
	if _, err := (&passport.Verifier{}).Verify(req, oldKey); !errors.Is(err, passport.ErrSignature) {
		t.Errorf("the old key verifies a call signed after the rotation: %v", err)
	}
	if _, err := (&passport.Verifier{}).Verify(req, k.PublicKey()); err != nil {
		t.Errorf("the new key: %v", err)
	}
	// The file holds the new key: a restart signs with it.
	again, err := passport.LoadKey(k.Path())
	if err != nil || passport.Thumbprint(again.PublicKey()) != after.KeyID {
		t.Errorf("key file after rotation: %v", err)
	}
}

func TestUpstreamClock(t *testing.T) {
	date := func(off time.Duration, at time.Time) string { return at.Add(off).UTC().Format(http.TimeFormat) }
	t.Run("an edge 30 s ahead moves the signing clock", func(t *testing.T) {
		c := &upstreamClock{}
		now := time.Now()
		for range 3 {
			c.observe(date(30*time.Second, now), now)
		}
		if d := c.Now().Sub(time.Now()); d < 29*time.Second || d > 31*time.Second {
			t.Errorf("Now is %s off, want about 30 s", d)
		}
		if st := c.status(); st.Samples != 3 || st.OffsetS < 29 || st.OffsetS > 31 {
			t.Errorf("status %+v", st)
		}
	})
	t.Run("under a second is the Date's rounding, not drift", func(t *testing.T) {
		c := &upstreamClock{}
		now := time.Now()
		c.observe(date(0, now), now)
		if d := c.Now().Sub(time.Now()); d.Abs() > 100*time.Millisecond {
			t.Errorf("Now is %s off, want none", d)
		}
	})
	t.Run("one wild Date among many does not move it", func(t *testing.T) {
		c := &upstreamClock{}
		now := time.Now()
		for range 5 {
			c.observe(date(20*time.Second, now), now)
		}
		c.observe(date(-time.Hour, now), now)
		if d := c.Now().Sub(time.Now()); d < 19*time.Second || d > 21*time.Second {
			t.Errorf("Now is %s off, want about 20 s", d)
		}
	})
	t.Run("a Date that does not parse is ignored", func(t *testing.T) {
		c := &upstreamClock{}
		if err := c.observe("yesterday", time.Now()); !errors.Is(err, errNoDate) {
			t.Errorf("observe: %v", err)
		}
		if c.status().Samples != 0 {
			t.Error("counted as a sample")
		}
	})
}
