package passport

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// invite is the INVITE the agent relays for claims(): from the line
// +15551230001 to +15551239999. Its fields are the header lines; an empty
// one is left out.
type invite struct {
	ruri, from, to, pai, callID, identity string
	extra                                 []string // more header lines
}

func newInvite() invite {
	return invite{
		ruri:   "sip:+15551239999@edge.leadport.example",
		from:   "<sip:+15551230001@pbx.example>;tag=1928301774",
		to:     "<sip:+15551239999@edge.leadport.example>",
		callID: "a84b4c76e66710@pbx.example",
	}
}

// request parses the INVITE as text, the way it reaches the edge.
func (in invite) request(t testing.TB) *sip.Request {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "INVITE %s SIP/2.0\r\n", in.ruri)
	b.WriteString("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\n")
	for _, h := range [][2]string{{"From", in.from}, {"To", in.to}, {"P-Asserted-Identity", in.pai}, {"Call-ID", in.callID}, {"Identity", in.identity}} {
		if h[1] != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
		}
	}
	for _, h := range in.extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
	msg, err := sip.ParseMessage([]byte(b.String()))
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", b.String(), err)
	}
	return msg.(*sip.Request)
}

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestVerify(t *testing.T) {
	key := newKey(t)
	other := newKey(t)
	sign := func(t *testing.T, h Header, c Claims) string {
		tok, err := Sign(key, h, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name   string
		claims func(*Claims)
		// req changes the INVITE; identity holds the header the agent
		// would add, to be used or replaced.
		req func(in *invite, tok string)
		pub *ecdsa.PublicKey
		now time.Time
		err error
	}{
		// The first case passes, so every other fails for its own reason.
		{name: "good"},
		{name: "compact header name", req: func(in *invite, tok string) {
			in.identity = ""
			in.extra = []string{"y: " + IdentityHeader(tok, info)}
		}},
		{name: "no Identity", req: func(in *invite, _ string) { in.identity = "" }, err: ErrNoIdentity},
		{name: "no info", req: func(in *invite, tok string) { in.identity = tok + ";alg=ES256" }, err: ErrMalformed},
		{name: "truncated token", req: func(in *invite, tok string) { in.identity = IdentityHeader(tok[:len(tok)/2], info) }, err: ErrMalformed},
		{name: "info is not x5u", req: func(in *invite, tok string) { in.identity = IdentityHeader(tok, info+"x") }, err: ErrMalformed},
		{name: "alg parameter", req: func(in *invite, tok string) { in.identity = tok + ";info=<" + info + ">;alg=ES384" }, err: ErrAlgorithm},
		{name: "ppt parameter", req: func(in *invite, tok string) { in.identity = IdentityHeader(tok, info) + ";ppt=shaken" }, err: ErrUnsupported},
		{name: "other key", pub: &other.PublicKey, err: ErrSignature},
		{name: "window edge", now: t0.Add(DefaultWindow)},
		{name: "stale", now: t0.Add(DefaultWindow + time.Second), err: ErrStale},
		{name: "future edge", claims: func(c *Claims) { c.IssuedAt += 60 }},
		{name: "future", claims: func(c *Claims) { c.IssuedAt += 61 }, err: ErrFuture},
		{name: "orig formatted", req: func(in *invite, _ string) { in.from = "\"Sales\" <sip:+1-555-123-0001@pbx.example>;tag=1928301774" }},
		{name: "orig tel", req: func(in *invite, _ string) { in.from = "<tel:+1-555-123-0001;phone-context=+1>;tag=1928301774" }},
		{name: "orig other", req: func(in *invite, _ string) { in.from = "<sip:+15551230002@pbx.example>;tag=1928301774" }, err: ErrOrig},
		{name: "orig not a number", req: func(in *invite, _ string) { in.from = "<sip:alice@pbx.example>;tag=1928301774" }, err: ErrOrig},
		{name: "orig from PAI", req: func(in *invite, _ string) {
			in.from = "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1928301774"
			in.pai = "<sip:+15551230001@pbx.example;user=phone>, <tel:+15551230001>"
		}},
		{name: "PAI wins over From", req: func(in *invite, _ string) { in.pai = "<tel:+15551230002>" }, err: ErrOrig},
		{name: "dest from To", req: func(in *invite, _ string) { in.ruri = "sip:edge.leadport.example" }},
		{name: "dest tel", req: func(in *invite, _ string) { in.ruri = "tel:+1-555-123-9999" }},
		{name: "dest escaped", claims: func(c *Claims) { c.Dest.TN = []string{"*72", "+15551239999"} }, req: func(in *invite, _ string) {
			in.ruri, in.to = "sip:%2A72@edge.leadport.example", "<sip:%2A72@edge.leadport.example>"
		}},
		{name: "dest other", req: func(in *invite, _ string) {
			in.ruri, in.to = "sip:+15551238888@edge.leadport.example", "<sip:+15551238888@edge.leadport.example>"
		}, err: ErrDest},
		{name: "dest missing", req: func(in *invite, _ string) {
			in.ruri, in.to = "sip:edge.leadport.example", "<sip:edge.leadport.example>"
		}, err: ErrDest},
		{name: "other Call-ID", req: func(in *invite, _ string) { in.callID = "b" + in.callID }, err: ErrBinding},
		{name: "other From tag", req: func(in *invite, _ string) { in.from = "<sip:+15551230001@pbx.example>;tag=1928301775" }, err: ErrBinding},
		{name: "no From tag", req: func(in *invite, _ string) { in.from = "<sip:+15551230001@pbx.example>" }, err: ErrBinding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := claims()
			if tt.claims != nil {
				tt.claims(&c)
			}
			tok := sign(t, Header{X5U: info}, c)
			in := newInvite()
			in.identity = IdentityHeader(tok, info)
			if tt.req != nil {
				tt.req(&in, tok)
			}
			pub := &key.PublicKey
			if tt.pub != nil {
				pub = tt.pub
			}
			now := t0
			if !tt.now.IsZero() {
				now = tt.now
			}
			v := &Verifier{Now: fixedClock(now)}
			got, err := v.Verify(in.request(t), pub)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Verify = %v, want %v", err, tt.err)
			}
			if err != nil {
				if got != nil {
					t.Fatal("claims returned with an error")
				}
				return
			}
			if got.Device != "pbx-0042" || got.Counter != 7 {
				t.Fatalf("claims %+v", got)
			}
			// The same INVITE again is a replay.
			if _, err := v.Verify(in.request(t), pub); !errors.Is(err, ErrReplay) {
				t.Fatalf("second Verify = %v, want ErrReplay", err)
			}
		})
	}
}

// TestVerifyRefusalKeepsCounter: a token refused for another reason does
// not use its counter up, so the right one can still pass.
func TestVerifyRefusalKeepsCounter(t *testing.T) {
	key := newKey(t)
	v := &Verifier{Now: fixedClock(t0)}
	tok, err := Sign(key, Header{X5U: info}, claims())
	if err != nil {
		t.Fatal(err)
	}
	in := newInvite()
	in.identity = IdentityHeader(tok, info)
	in.callID = "other@pbx.example"
	if _, err := v.Verify(in.request(t), &key.PublicKey); !errors.Is(err, ErrBinding) {
		t.Fatal(err)
	}
	in = newInvite()
	in.identity = IdentityHeader(tok, info)
	if _, err := v.Verify(in.request(t), &key.PublicKey); err != nil {
		t.Fatalf("Verify after a refusal = %v", err)
	}
}

func TestVerifyOutOfOrder(t *testing.T) {
	key := newKey(t)
	v := &Verifier{Now: fixedClock(t0)}
	verify := func(ctr uint64) error {
		c := claims()
		c.Counter = ctr
		tok, err := Sign(key, Header{X5U: info}, c)
		if err != nil {
			t.Fatal(err)
		}
		in := newInvite()
		in.identity = IdentityHeader(tok, info)
		_, err = v.Verify(in.request(t), &key.PublicKey)
		return err
	}
	steps := []struct {
		ctr uint64
		err error
	}{
		{10, nil}, {12, nil}, {11, nil}, {11, ErrReplay}, {2000, nil}, {1500, nil}, {12, ErrReplay}, {1500, ErrReplay},
	}
	for _, s := range steps {
		if err := verify(s.ctr); !errors.Is(err, s.err) {
			t.Fatalf("counter %d: %v, want %v", s.ctr, err, s.err)
		}
	}
	err := verify(900)
	if !errors.Is(err, ErrReplay) || !strings.Contains(err.Error(), "too old") {
		t.Fatalf("counter 900 after 2000: %v, want ErrReplay (too old)", err)
	}
	// Keys have their own counters: the same counter on another key is new.
	other := newKey(t)
	c := claims()
	c.Counter = 12
	tok, _ := Sign(other, Header{X5U: info}, c)
	in := newInvite()
	in.identity = IdentityHeader(tok, info)
	if _, err := v.Verify(in.request(t), &other.PublicKey); err != nil {
		t.Fatalf("counter 12 on another key: %v", err)
	}
}

// TestVerifyConcurrent: many goroutines verifying the same tokens at once
// accept each exactly once (run with -race).
func TestVerifyConcurrent(t *testing.T) {
	key := newKey(t)
	v := &Verifier{Now: fixedClock(t0)}
	const tokens, workers = 64, 8
	reqs := make([]*sip.Request, 0, tokens)
	for i := range tokens {
		c := claims()
		c.Counter = uint64(tokens - i) // signed in order, arriving reversed
		tok, err := Sign(key, Header{X5U: info}, c)
		if err != nil {
			t.Fatal(err)
		}
		in := newInvite()
		in.identity = IdentityHeader(tok, info)
		reqs = append(reqs, in.request(t))
	}
	var mu sync.Mutex
	accepted := map[uint64]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, req := range reqs {
				// Each goroutine gets its own copy: sipgo parses headers
				// lazily, into the request.
				c, err := v.Verify(req.Clone(), &key.PublicKey)
				switch {
				case err == nil:
					mu.Lock()
					accepted[c.Counter]++
					mu.Unlock()
				case !errors.Is(err, ErrReplay):
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if len(accepted) != tokens {
		t.Errorf("%d counters accepted, want %d", len(accepted), tokens)
	}
	for ctr, n := range accepted {
		if n != 1 {
			t.Errorf("counter %d accepted %d times", ctr, n)
		}
	}
}

func TestVerifyNumberHook(t *testing.T) {
	key := newKey(t)
	tok, err := Sign(key, Header{X5U: info}, claims())
	if err != nil {
		t.Fatal(err)
	}
	in := newInvite()
	in.identity = IdentityHeader(tok, info)
	// A PBX that sends national numbers.
	in.from = "<sip:5551230001@pbx.example>;tag=1928301774"
	in.ruri, in.to = "sip:5551239999@edge.leadport.example", "<sip:5551239999@edge.leadport.example>"
	if _, err := (&Verifier{Now: fixedClock(t0)}).Verify(in.request(t), &key.PublicKey); !errors.Is(err, ErrOrig) {
		t.Fatalf("national numbers without Number = %v, want ErrOrig", err)
	}
	v := &Verifier{Now: fixedClock(t0), Number: func(u string) string {
		if len(u) == 10 {
			return "+1" + u
		}
		return u
	}}
	if _, err := v.Verify(in.request(t), &key.PublicKey); err != nil {
		t.Fatalf("with Number: %v", err)
	}
}

func TestVerifyToken(t *testing.T) {
	key := newKey(t)
	tok, err := Sign(key, Header{}, claims())
	if err != nil {
		t.Fatal(err)
	}
	want := Expect{Orig: "+15551230001", Dest: []string{"+15551239999"}, CallID: "a84b4c76e66710@pbx.example", FromTag: "1928301774"}
	v := &Verifier{Now: fixedClock(t0), Window: 10 * time.Second}
	if _, err := v.VerifyToken(tok, &key.PublicKey, Expect{}); !errors.Is(err, ErrOrig) {
		t.Fatalf("empty Expect = %v, want ErrOrig: a missing expectation fails closed", err)
	}
	if _, err := v.VerifyToken(tok, &key.PublicKey, Expect{Orig: want.Orig, Dest: want.Dest}); !errors.Is(err, ErrBinding) {
		t.Fatalf("no Call-ID = %v, want ErrBinding", err)
	}
	if _, err := v.VerifyToken(tok, &key.PublicKey, want); err != nil {
		t.Fatal(err)
	}
	v.Now = fixedClock(t0.Add(11 * time.Second))
	if _, err := v.VerifyToken(tok, &key.PublicKey, want); !errors.Is(err, ErrStale) {
		t.Fatalf("with a 10s window, 11s later = %v, want ErrStale", err)
	}
}

func TestVerifyCapacity(t *testing.T) {
	v := &Verifier{Now: fixedClock(t0), MaxKeys: 1}
	for i, wantErr := range []error{nil, ErrCapacity} {
		key := newKey(t)
		tok, err := Sign(key, Header{X5U: info}, claims())
		if err != nil {
			t.Fatal(err)
		}
		in := newInvite()
		in.identity = IdentityHeader(tok, info)
		if _, err := v.Verify(in.request(t), &key.PublicKey); !errors.Is(err, wantErr) {
			t.Fatalf("key %d: %v, want %v", i, err, wantErr)
		}
	}
}

func TestExpectRequest(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*invite)
		want Expect
	}{
		{"plain", func(*invite) {}, Expect{Orig: "+15551230001", Dest: []string{"+15551239999", "+15551239999"},
			CallID: "a84b4c76e66710@pbx.example", FromTag: "1928301774"}},
		{"PAI name-addr list", func(in *invite) { in.pai = `"Sales" <sip:+15551230003@pbx.example;user=phone>, <tel:+15551230004>` },
			Expect{Orig: "+15551230003"}},
		{"PAI addr-spec", func(in *invite) { in.pai = "tel:+15551230005;verstat=TN-Validation-Passed" }, Expect{Orig: "+15551230005"}},
		{"PAI unparsable falls back to From", func(in *invite) { in.pai = "<" }, Expect{Orig: "+15551230001"}},
		{"user parameters", func(in *invite) { in.from = "<sip:+15551230001;npdi;rn=+15550000000@pbx.example;user=phone>;tag=x" },
			Expect{Orig: "+15551230001", FromTag: "x"}},
		{"escapes", func(in *invite) { in.ruri, in.to = "sip:%2A72%23@e.example", "<sip:*72%23@e.example>" },
			Expect{Dest: []string{"*72#", "*72#"}}},
		{"no user", func(in *invite) { in.ruri, in.to = "sip:e.example", "<tel:+15551239999>" },
			Expect{Dest: []string{"+15551239999"}}},
		{"other scheme", func(in *invite) { in.from = "<urn:service:sos>;tag=x" }, Expect{FromTag: "x"}},
		{"Call-ID spaces", func(in *invite) { in.callID = "  abc@x  " }, Expect{CallID: "abc@x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newInvite()
			tt.mod(&in)
			got := ExpectRequest(in.request(t))
			want := ExpectRequest(newInvite().request(t))
			// Compare only what the case names; the rest is the plain INVITE's.
			if tt.want.Orig != "" || tt.name == "other scheme" {
				want.Orig = tt.want.Orig
			}
			if tt.want.Dest != nil {
				want.Dest = tt.want.Dest
			}
			if tt.want.CallID != "" {
				want.CallID = tt.want.CallID
			}
			if tt.want.FromTag != "" {
				want.FromTag = tt.want.FromTag
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("ExpectRequest\n got %+v\nwant %+v", got, want)
			}
		})
	}
}
