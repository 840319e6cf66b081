package passport

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
)

// Thumbprint is the RFC 7638 JWK thumbprint of a P-256 public key: the
// base64url SHA-256 of {"crv":"P-256","kty":"EC","x":...,"y":...}, the
// members in that order and without whitespace. It names a key in
// enrolment records and info URIs independently of how the key is
// encoded. It is "" for a key that is not a valid P-256 key.
func Thumbprint(pub *ecdsa.PublicKey) string {
	if _, err := p256(pub); err != nil {
		return ""
	}
	pt, err := pub.Bytes() // 0x04 || X || Y, each 32 bytes
	if err != nil {
		return ""
	}
	enc := base64.RawURLEncoding
	// Written by hand: the members and their order are fixed by RFC 7638,
	// and the coordinates are base64url, which needs no JSON escaping.
	b := make([]byte, 0, 128)
	b = append(b, `{"crv":"P-256","kty":"EC","x":"`...)
	b = enc.AppendEncode(b, pt[1:33])
	b = append(b, `","y":"`...)
	b = enc.AppendEncode(b, pt[33:65])
	b = append(b, `"}`...)
	sum := sha256.Sum256(b)
	return enc.EncodeToString(sum[:])
}

// PublicKeyPEM is pub as a PEM "PUBLIC KEY" (PKIX) block, the form
// enrolment takes and kamailio's secsipid_check_identity_pubkey reads. It
// is nil for a key that is not a valid P-256 key.
func PublicKeyPEM(pub *ecdsa.PublicKey) []byte {
	if _, err := p256(pub); err != nil {
		return nil
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePublicKeyPEM reads the first "PUBLIC KEY" block of data, refusing a
// key other than P-256 (ErrKeyType).
func ParsePublicKeyPEM(data []byte) (*ecdsa.PublicKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%w: no PUBLIC KEY block", ErrKeyFormat)
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKeyFormat, err)
		}
		return p256(pub)
	}
}
