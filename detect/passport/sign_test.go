package passport

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

const info = "https://keys.leadport.example/d/pbx-0042"

// claims are the claims of a call from the line +15551230001 to
// +15551239999, issued at t0.
func claims() Claims {
	return Claims{
		CallBinding: Binding("a84b4c76e66710@pbx.example", "1928301774"),
		Counter:     7,
		Dest:        Dest{TN: []string{"+15551239999"}},
		Device:      "pbx-0042",
		IssuedAt:    t0.Unix(),
		Orig:        Orig{TN: "+15551230001"},
		OrigID:      "4437c7eb-8f92-4b4c-9a3c-8f4c5e0a1d2e",
		Policy:      3,
		Verdict:     Allowed,
	}
}

func TestSignParse(t *testing.T) {
	key := newKey(t)
	c := claims()
	c.Verdict, c.Rules = Observed, []string{"pacing.rate", "forwarding.diversion"}
	tok, err := Sign(key, Header{X5U: info}, c)
	if err != nil {
		t.Fatal(err)
	}
	h, got, err := Parse(tok, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if h != (Header{Alg: "ES256", Typ: "passport", X5U: info}) {
		t.Errorf("header %+v", h)
	}
	want := c
	want.Orig.TN, want.Dest.TN = "15551230001", []string{"15551239999"}
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("claims\n got %s\nwant %s", g, w)
	}
	// Sign works on a copy: the caller's claims keep their numbers.
	if c.Orig.TN != "+15551230001" || c.Dest.TN[0] != "+15551239999" {
		t.Errorf("Sign changed the caller's claims: %+v", c)
	}
}

// TestSignIndependent checks the token with go-jose, an implementation
// that shares no code with this one.
func TestSignIndependent(t *testing.T) {
	key := newKey(t)
	tok, err := Sign(key, Header{X5U: info}, claims())
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify(&key.PublicKey)
	if err != nil {
		t.Fatalf("go-jose does not verify the token: %v", err)
	}
	if !bytes.Contains(payload, []byte(`"dev":"pbx-0042"`)) {
		t.Errorf("payload %s", payload)
	}
	if typ := jws.Signatures[0].Protected.ExtraHeaders["typ"]; typ != "passport" {
		t.Errorf("typ %v", typ)
	}
	// And the other way: a token go-jose signs, Parse takes.
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("passport"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign([]byte(mustJSON(t, claims())))
	if err != nil {
		t.Fatal(err)
	}
	other, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Parse(other, &key.PublicKey); err != nil {
		t.Fatalf("Parse of go-jose's token: %v", err)
	}
}

// TestSignDeterministic: the signed header and payload are fixed by the
// inputs, byte for byte, as RFC 8225 section 9 serialises them. The
// signature is not, with a key that draws its nonces from the reader (a
// plain *ecdsa.PrivateKey here; FileKey's are RFC 6979's, fixed too).
func TestSignDeterministic(t *testing.T) {
	key := newKey(t)
	c := claims()
	c.Verdict, c.Rules = Observed, []string{"pacing.rate"}
	a, err := Sign(key, Header{X5U: info}, c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Sign(key, Header{X5U: info}, c)
	if err != nil {
		t.Fatal(err)
	}
	ha, pa, sa, _ := segments(a)
	hb, pb, sb, _ := segments(b)
	if ha != hb || pa != pb {
		t.Errorf("header or payload differ between signings:\n%s.%s\n%s.%s", ha, pa, hb, pb)
	}
	if sa == sb {
		t.Error("two ECDSA signatures are equal: is the signer's randomness broken?")
	}
	header, _ := b64.DecodeString(ha)
	payload, _ := b64.DecodeString(pa)
	const wantHeader = `{"alg":"ES256","typ":"passport","x5u":"https://keys.leadport.example/d/pbx-0042"}`
	const wantPayload = `{"cb":"cbkFP75WkfbOorUmvNMUrvsXk-s3qfuqmo8gM1KfmEQ","ctr":7,"dest":{"tn":["15551239999"]},` +
		`"dev":"pbx-0042","iat":1798761600,"orig":{"tn":"15551230001"},"origid":"4437c7eb-8f92-4b4c-9a3c-8f4c5e0a1d2e",` +
		`"pol":3,"rules":["pacing.rate"],"vrd":"observed"}`
	if string(header) != wantHeader {
		t.Errorf("header\n got %s\nwant %s", header, wantHeader)
	}
	if string(payload) != wantPayload {
		t.Errorf("payload\n got %s\nwant %s", payload, wantPayload)
	}
	for _, seg := range [][]byte{header, payload} {
		if sorted := sortedJSON(t, seg); !bytes.Equal(seg, sorted) {
			t.Errorf("not in RFC 8225 order:\n got %s\nwant %s", seg, sorted)
		}
	}
	sig, _ := b64.DecodeString(sa)
	if len(sig) != 64 {
		t.Errorf("signature is %d bytes, want R||S of 64", len(sig))
	}
}

// TestClaimsOrder holds every field of Claims, set, to lexicographic
// order: a field added out of order fails here.
func TestClaimsOrder(t *testing.T) {
	c := claims()
	c.Rules = []string{"a<b>&c"} // and no HTML escaping
	c.Counter = 1<<64 - 1
	b, err := marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if sorted := sortedJSON(t, b); !bytes.Equal(b, sorted) {
		t.Errorf("not in RFC 8225 order:\n got %s\nwant %s", b, sorted)
	}
	if !bytes.Contains(b, []byte(`"a<b>&c"`)) || !bytes.Contains(b, []byte(`18446744073709551615`)) {
		t.Errorf("escaping or number form: %s", b)
	}
}

func TestSignRefuses(t *testing.T) {
	key := newKey(t)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		name   string
		signer Signer
		h      Header
		mod    func(*Claims)
		err    error
	}{
		{"good", key, Header{X5U: info}, func(*Claims) {}, nil},
		{"no x5u", key, Header{}, func(*Claims) {}, nil},
		{"explicit header", key, Header{Alg: "ES256", Typ: "passport"}, func(*Claims) {}, nil},
		{"alg", key, Header{Alg: "RS256"}, func(*Claims) {}, ErrAlgorithm},
		{"typ", key, Header{Typ: "JWT"}, func(*Claims) {}, ErrUnsupported},
		{"x5u with =", key, Header{X5U: "https://k.example/key?dev=pbx-0042"}, func(*Claims) {}, ErrMalformed},
		{"x5u relative", key, Header{X5U: "/keys/pbx-0042"}, func(*Claims) {}, ErrMalformed},
		{"P-384", p384, Header{}, func(*Claims) {}, ErrKeyType},
		{"no iat", key, Header{}, func(c *Claims) { c.IssuedAt = 0 }, ErrMalformed},
		{"no orig", key, Header{}, func(c *Claims) { c.Orig.TN = "" }, ErrMalformed},
		{"orig not a number", key, Header{}, func(c *Claims) { c.Orig.TN = "alice" }, ErrNotNumber},
		{"no dest", key, Header{}, func(c *Claims) { c.Dest.TN = nil }, ErrMalformed},
		{"dest not a number", key, Header{}, func(c *Claims) { c.Dest.TN = []string{"1", "bob"} }, ErrNotNumber},
		{"no origid", key, Header{}, func(c *Claims) { c.OrigID = "" }, ErrMalformed},
		{"no dev", key, Header{}, func(c *Claims) { c.Device = "" }, ErrMalformed},
		{"no ctr", key, Header{}, func(c *Claims) { c.Counter = 0 }, ErrMalformed},
		{"no cb", key, Header{}, func(c *Claims) { c.CallBinding = "" }, ErrMalformed},
		{"no vrd", key, Header{}, func(c *Claims) { c.Verdict = "" }, ErrMalformed},
		{"blocked", key, Header{}, func(c *Claims) { c.Verdict = "blocked" }, ErrMalformed},
		{"observed without rules", key, Header{}, func(c *Claims) { c.Verdict = Observed }, ErrMalformed},
		{"signer fails", failSigner{key, nil}, Header{}, func(*Claims) {}, errHardware},
		{"signer returns junk", failSigner{key, []byte{1, 2, 3}}, Header{}, func(*Claims) {}, ErrSignature},
		{"signer returns trailing bytes", failSigner{key, append(derSig(t, 1, 1), 0)}, Header{}, func(*Claims) {}, ErrSignature},
		{"signer returns r = 0", failSigner{key, derSig(t, 0, 1)}, Header{}, func(*Claims) {}, ErrSignature},
		{"signer returns 257-bit s", failSigner{key, derSig(t, 1, -257)}, Header{}, func(*Claims) {}, ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := claims()
			tt.mod(&c)
			tok, err := Sign(tt.signer, tt.h, c)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Sign = %q, %v; want %v", tok, err, tt.err)
			}
		})
	}
}

// TestRawSignature: leading zero bytes of r and s, which DER drops and
// R||S keeps, survive the conversion.
func TestRawSignature(t *testing.T) {
	for _, r := range []int64{1, 255, 1 << 40} {
		raw, err := rawSignature(derSig(t, r, -256))
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) != 64 || new(big.Int).SetBytes(raw[:32]).Int64() != r || raw[32] != 0x80 {
			t.Errorf("r=%d: %x", r, raw)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	key := newKey(t)
	other := newKey(t)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	good := mustJSON(t, claims())
	goodTok, err := Sign(key, Header{X5U: info}, claims())
	if err != nil {
		t.Fatal(err)
	}
	h, p, s, _ := segments(goodTok)
	tests := []struct {
		name  string
		token string
		pub   *ecdsa.PublicKey
		err   error
	}{
		{"good", goodTok, &key.PublicKey, nil},
		{"raw signed", signRaw(t, key, `{"alg":"ES256","typ":"passport"}`, good), &key.PublicKey, nil},
		{"other key", goodTok, &other.PublicKey, ErrSignature},
		{"P-384 key", goodTok, &p384.PublicKey, ErrKeyType},
		{"payload swapped", h + "." + b64.EncodeToString([]byte(strings.Replace(good, `"ctr":7`, `"ctr":8`, 1))) + "." + s, &key.PublicKey, ErrSignature},
		{"signature short", h + "." + p + "." + s[:len(s)-2], &key.PublicKey, ErrSignature},
		{"signature padded", goodTok + "=", &key.PublicKey, ErrMalformed},
		{"signature bits", h + "." + p + "." + flipLastBits(s), &key.PublicKey, ErrMalformed},
		{"two segments", h + "." + p, &key.PublicKey, ErrMalformed},
		{"four segments", goodTok + ".x", &key.PublicKey, ErrMalformed},
		{"compact form", h + ".." + s, &key.PublicKey, ErrUnsupported},
		{"header not base64", "!" + h[1:] + "." + p + "." + s, &key.PublicKey, ErrMalformed},
		{"header not JSON", signRaw(t, key, `alg=ES256`, good), &key.PublicKey, ErrMalformed},
		{"alg none", signRaw(t, key, `{"alg":"none","typ":"passport"}`, good), &key.PublicKey, ErrAlgorithm},
		{"alg ES384", signRaw(t, key, `{"alg":"ES384","typ":"passport"}`, good), &key.PublicKey, ErrAlgorithm},
		{"alg missing", signRaw(t, key, `{"typ":"passport"}`, good), &key.PublicKey, ErrAlgorithm},
		{"typ missing", signRaw(t, key, `{"alg":"ES256"}`, good), &key.PublicKey, ErrUnsupported},
		{"typ JWT", signRaw(t, key, `{"alg":"ES256","typ":"JWT"}`, good), &key.PublicKey, ErrUnsupported},
		{"ppt", signRaw(t, key, `{"alg":"ES256","ppt":"shaken","typ":"passport"}`, good), &key.PublicKey, ErrUnsupported},
		{"crit", signRaw(t, key, `{"alg":"ES256","crit":["x"],"typ":"passport","x":1}`, good), &key.PublicKey, ErrUnsupported},
		{"payload not JSON", signRaw(t, key, `{"alg":"ES256","typ":"passport"}`, `{"iat":`), &key.PublicKey, ErrMalformed},
		{"ctr a string", signRaw(t, key, `{"alg":"ES256","typ":"passport"}`, strings.Replace(good, `"ctr":7`, `"ctr":"7"`, 1)), &key.PublicKey, ErrMalformed},
		{"ctr negative", signRaw(t, key, `{"alg":"ES256","typ":"passport"}`, strings.Replace(good, `"ctr":7`, `"ctr":-7`, 1)), &key.PublicKey, ErrMalformed},
		{"ctr missing", signRaw(t, key, `{"alg":"ES256","typ":"passport"}`, strings.Replace(good, `"ctr":7,`, ``, 1)), &key.PublicKey, ErrMalformed},
		{"iat float", signRaw(t, key, `{"alg":"ES256","typ":"passport"}`, strings.Replace(good, `"iat":1798761600`, `"iat":1798761600.5`, 1)), &key.PublicKey, ErrMalformed},
		{"no dev", signRaw(t, key, `{"alg":"ES256","typ":"passport"}`, strings.Replace(good, `"dev":"pbx-0042",`, ``, 1)), &key.PublicKey, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c, err := Parse(tt.token, tt.pub)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse = %+v, %v; want %v", c, err, tt.err)
			}
			if err != nil && c != nil {
				t.Fatal("claims returned with an error")
			}
		})
	}
}

// signRaw signs any header and payload, valid or not, as an ES256 JWS.
func signRaw(t testing.TB, key *ecdsa.PrivateKey, header, payload string) string {
	t.Helper()
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	d := sha256.Sum256([]byte(in))
	der, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rawSignature(der)
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + b64.EncodeToString(raw)
}

// flipLastBits changes the unused low bits of the last base64 character
// of a 64-byte signature: the bytes decode the same unless the decoder is
// strict, which it must be, or the signature would be malleable.
func flipLastBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i^1])
}

var errHardware = errors.New("secure element busy")

// failSigner is a hardware signer gone wrong: it returns sig, or
// errHardware when sig is nil.
type failSigner struct {
	key *ecdsa.PrivateKey
	sig []byte
}

func (f failSigner) Public() crypto.PublicKey { return &f.key.PublicKey }
func (f failSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	if f.sig == nil {
		return nil, errHardware
	}
	return f.sig, nil
}

// derSig is an ASN.1 ECDSA signature with the given r and s; a negative s
// means 2^-s: s bits long, its high bit set.
func derSig(t testing.TB, r, s int64) []byte {
	t.Helper()
	S := big.NewInt(s)
	if s < 0 {
		S = new(big.Int).Lsh(big.NewInt(1), uint(-s-1))
	}
	der, err := asn1Marshal(big.NewInt(r), S)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sortedJSON re-encodes a JSON object through a map, which encoding/json
// writes in sorted key order, keeping numbers as written.
func sortedJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	out, err := marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
