package passport

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
)

// Parse checks a compact JWS against pub and returns its header and
// claims. It checks what holds for any token on its own: the form, alg
// ES256, typ passport, no ppt or crit, the signature, and that every
// claim Sign requires is present. It does not look at the time, the call
// or the counter: Verifier does.
//
// The signature is checked before the payload is decoded, so claims are
// only ever read from a token the key signed.
func Parse(token string, pub *ecdsa.PublicKey) (Header, *Claims, error) {
	var h Header
	hseg, pseg, sseg, ok := segments(token)
	if !ok {
		return h, nil, fmt.Errorf("%w: token is not header.payload.signature", ErrMalformed)
	}
	if pseg == "" {
		return h, nil, fmt.Errorf("%w: compact form (empty payload)", ErrUnsupported)
	}
	hb, err := b64.DecodeString(hseg)
	if err != nil {
		return h, nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	var hdr struct {
		Header
		// Present only to be refused: RFC 7515 makes crit a list of
		// extensions the verifier must understand, and ppt names an
		// extension this package does not implement.
		Crit json.RawMessage `json:"crit"`
		PPT  json.RawMessage `json:"ppt"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return h, nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	h = hdr.Header
	switch {
	case h.Alg != AlgES256:
		return h, nil, fmt.Errorf("%w: header alg %q", ErrAlgorithm, h.Alg)
	case h.Typ != TypPassport:
		return h, nil, fmt.Errorf("%w: header typ %q", ErrUnsupported, h.Typ)
	case hdr.PPT != nil:
		return h, nil, fmt.Errorf("%w: ppt extension", ErrUnsupported)
	case hdr.Crit != nil:
		return h, nil, fmt.Errorf("%w: crit header", ErrUnsupported)
	}

	key, err := p256(pub)
	if err != nil {
		return h, nil, err
	}
	sig, err := b64.DecodeString(sseg)
	if err != nil {
		return h, nil, fmt.Errorf("%w: signature: %w", ErrMalformed, err)
	}
	if len(sig) != 64 {
		return h, nil, fmt.Errorf("%w: signature is %d bytes, ES256 takes 64", ErrSignature, len(sig))
	}
	digest := sha256.Sum256([]byte(token[:len(hseg)+1+len(pseg)]))
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(key, digest[:], r, s) {
		return h, nil, fmt.Errorf("%w: does not verify with the key given", ErrSignature)
	}

	pb, err := b64.DecodeString(pseg)
	if err != nil {
		return h, nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	c := new(Claims)
	if err := json.Unmarshal(pb, c); err != nil {
		return h, nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	if err := c.check(); err != nil {
		return h, nil, err
	}
	if len(c.Rules) == 0 {
		c.Rules = nil // "rules":[] and no rules are the same claim
	}
	return h, c, nil
}

// segments splits a compact JWS. Header and signature must be non-empty;
// the payload may be empty (the compact PASSporT form), which the caller
// tells apart.
func segments(token string) (h, p, s string, ok bool) {
	h, rest, ok1 := strings.Cut(token, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || h == "" || s == "" || strings.IndexByte(s, '.') >= 0 {
		return "", "", "", false
	}
	return h, p, s, true
}
