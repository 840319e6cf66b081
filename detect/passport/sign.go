package passport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
)

// Signer is the device key as Sign needs it. It has the methods of
// crypto.Signer, so the signers that TPM, PKCS#11 and secure-element
// libraries already return plug in without an adapter, as does a
// *ecdsa.PrivateKey or a *FileKey. Public must return a P-256
// *ecdsa.PublicKey; Sign is given a SHA-256 digest and must return the
// ASN.1 DER ECDSA signature crypto.Signer promises for ECDSA keys. Sign
// turns it into the 64-byte R||S form JWS uses (RFC 7518 section 3.4).
type Signer interface {
	Public() crypto.PublicKey
	Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

var b64 = base64.RawURLEncoding.Strict()

// Sign returns the compact JWS serialisation of a full-form PASSporT:
// header.payload.signature, each part base64url without padding. Header
// and payload are encoded as RFC 8225 section 9 asks: keys in
// lexicographic order, no whitespace.
//
// Sign canonicalises the numbers in c (see Canonical) and refuses claims
// the verifier would refuse: a missing iat, orig, dest, origid, dev, ctr
// or cb, a verdict other than allowed or observed, or observed without
// rules. A key that is not P-256 is ErrKeyType.
func Sign(s Signer, h Header, c Claims) (string, error) {
	if _, err := p256(s.Public()); err != nil {
		return "", err
	}
	if h.Alg == "" {
		h.Alg = AlgES256
	} else if h.Alg != AlgES256 {
		return "", fmt.Errorf("%w: header alg %q", ErrAlgorithm, h.Alg)
	}
	if h.Typ == "" {
		h.Typ = TypPassport
	} else if h.Typ != TypPassport {
		return "", fmt.Errorf("%w: header typ %q", ErrUnsupported, h.Typ)
	}
	if h.X5U != "" {
		if err := checkInfo(h.X5U); err != nil {
			return "", fmt.Errorf("x5u: %w", err)
		}
	}
	var err error
	if c.Orig.TN != "" { // a missing orig is reported by check, below
		if c.Orig.TN, err = Canonical(c.Orig.TN); err != nil {
			return "", fmt.Errorf("%w: orig: %w", ErrMalformed, err)
		}
	}
	dest := make([]string, len(c.Dest.TN))
	for i, tn := range c.Dest.TN {
		if dest[i], err = Canonical(tn); err != nil {
			return "", fmt.Errorf("%w: dest: %w", ErrMalformed, err)
		}
	}
	c.Dest.TN = dest
	if err := c.check(); err != nil {
		return "", err
	}

	hb, err := marshal(h)
	if err != nil {
		return "", fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	pb, err := marshal(c)
	if err != nil {
		return "", fmt.Errorf("%w: claims: %w", ErrMalformed, err)
	}
	n := b64.EncodedLen(len(hb)) + 1 + b64.EncodedLen(len(pb))
	tok := make([]byte, n, n+1+b64.EncodedLen(64))
	b64.Encode(tok, hb)
	tok[b64.EncodedLen(len(hb))] = '.'
	b64.Encode(tok[b64.EncodedLen(len(hb))+1:], pb)

	digest := sha256.Sum256(tok)
	der, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("passport: signing: %w", err)
	}
	raw, err := rawSignature(der)
	if err != nil {
		return "", err
	}
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, raw)
	return string(tok), nil
}

// p256 is pub as an ECDSA P-256 key, the only kind ES256 signs with.
func p256(pub crypto.PublicKey) (*ecdsa.PublicKey, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k == nil {
		return nil, fmt.Errorf("%w: %T", ErrKeyType, pub)
	}
	if k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: curve %s", ErrKeyType, k.Curve.Params().Name)
	}
	return k, nil
}

// rawSignature turns the DER signature crypto.Signer returns into R||S,
// each left-padded to 32 bytes. A signer that is hardware may return
// anything, so the DER is checked rather than trusted.
func rawSignature(der []byte) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: signer returned no DER signature: %w", ErrSignature, err)
	case len(rest) != 0:
		return nil, fmt.Errorf("%w: signer returned trailing bytes", ErrSignature)
	case sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > 256 || sig.S.BitLen() > 256:
		return nil, fmt.Errorf("%w: signer returned r or s out of range", ErrSignature)
	}
	out := make([]byte, 64)
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}
