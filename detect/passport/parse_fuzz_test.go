package passport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"math/big"
	"reflect"
	"testing"
)

// fuzzKey is fixed so that the corpus in testdata/fuzz/FuzzParseSigned
// means the same on every run.
var fuzzKey = func() *ecdsa.PrivateKey {
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), big.NewInt(0x1ead907).FillBytes(make([]byte, 32)))
	if err != nil {
		panic(err)
	}
	return k
}()

// parseErrs are the errors Parse may return for a token, whatever it is.
var parseErrs = []error{ErrMalformed, ErrAlgorithm, ErrUnsupported, ErrSignature}

// FuzzParse feeds Parse arbitrary tokens: it never panics and refuses
// with one of its errors. A forged token cannot pass, so FuzzParseSigned
// covers what comes after the signature.
func FuzzParse(f *testing.F) {
	tok, err := Sign(fuzzKey, Header{X5U: info}, claims())
	if err != nil {
		f.Fatal(err)
	}
	h, p, _, _ := segments(tok)
	signed := h + "." + p
	f.Add(tok)
	for _, n := range []int{0, 1, 30, len(tok) / 2, len(tok) - 1} {
		f.Add(tok[:n])
	}
	f.Fuzz(func(t *testing.T, token string) {
		_, c, err := Parse(token, &fuzzKey.PublicKey)
		if err == nil {
			// Each fuzzing process signs tok anew, with another random
			// signature: compare what was signed.
			if h, p, _, _ := segments(token); h+"."+p != signed {
				t.Fatalf("Parse accepted a token the key did not sign: %q", token)
			}
			return
		}
		if c != nil || !isOneOf(err, parseErrs) {
			t.Fatalf("Parse(%q) = %v, %v", token, c, err)
		}
	})
}

// FuzzParseSigned signs arbitrary headers and payloads with the key, so
// the JSON decoding and the claim checks see the fuzzer's bytes: Parse
// never panics, refuses with one of its errors, and the claims it accepts
// encode and parse back to the same claims.
func FuzzParseSigned(f *testing.F) {
	good, _ := marshal(claims())
	f.Add(`{"alg":"ES256","typ":"passport","x5u":"`+info+`"}`, string(good))
	f.Add(`{"alg":"ES256","typ":"passport"}`, `{"iat":1}`)
	f.Add(`{"alg":"ES256","ppt":"shaken","typ":"passport"}`, string(good))
	f.Add(`{"alg":"ES256","typ":"passport"}`, string(good[:len(good)/2]))
	f.Fuzz(func(t *testing.T, header, payload string) {
		_, c, err := Parse(signRaw(t, fuzzKey, header, payload), &fuzzKey.PublicKey)
		if err != nil {
			if c != nil || !isOneOf(err, parseErrs) {
				t.Fatalf("Parse(%q, %q) = %v, %v", header, payload, c, err)
			}
			return
		}
		b, err := marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		_, again, err := Parse(signRaw(t, fuzzKey, `{"alg":"ES256","typ":"passport"}`, string(b)), &fuzzKey.PublicKey)
		if err != nil {
			t.Fatalf("claims accepted once refused after a round trip: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, c)
		}
	})
}

func isOneOf(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
