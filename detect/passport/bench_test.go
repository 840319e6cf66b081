package passport

import (
	"path/filepath"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// BenchmarkSign is the agent's cost per INVITE: encoding, SHA-256 and an
// ECDSA P-256 signature with the device's key (FileKey: RFC 6979 nonces).
func BenchmarkSign(b *testing.B) {
	key, _, err := LoadOrCreateKey(filepath.Join(b.TempDir(), "device.key"))
	if err != nil {
		b.Fatal(err)
	}
	c := claims()
	b.ReportAllocs()
	for b.Loop() {
		c.Counter++
		if _, err := Sign(key, Header{X5U: info}, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is the edge's cost per INVITE: header parse, signature,
// claims, binding and the counter window. Tokens are signed beforehand,
// one per iteration since each counter is accepted once.
func BenchmarkVerify(b *testing.B) {
	key := newKey(b)
	toks := make([]string, b.N)
	c := claims()
	for i := range toks {
		c.Counter = uint64(i + 1)
		tok, err := Sign(key, Header{X5U: info}, c)
		if err != nil {
			b.Fatal(err)
		}
		toks[i] = IdentityHeader(tok, info)
	}
	in := newInvite()
	in.identity = toks[0]
	req := in.request(b)
	v := &Verifier{Now: fixedClock(t0)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.RemoveHeader("Identity")
		req.AppendHeader(sip.NewHeader("Identity", toks[i]))
		if _, err := v.Verify(req, &key.PublicKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseIdentity(b *testing.B) {
	key := newKey(b)
	tok, err := Sign(key, Header{X5U: info}, claims())
	if err != nil {
		b.Fatal(err)
	}
	value := IdentityHeader(tok, info)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseIdentity(value); err != nil {
			b.Fatal(err)
		}
	}
}
