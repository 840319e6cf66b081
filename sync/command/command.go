// Package command reads the platform's signed commands (docs/protocol.md,
// "Commands"): a JWS in compact serialisation, alg EdDSA, kid naming one of
// the device's trusted keys, whose payload says what to do, to which
// device, and when it is valid. It also signs them, for the platform-side
// tools in the same binary.
//
// Verification is pure; whether a command id was seen before is the
// caller's ledger (the store), since it must outlive restarts.
package command

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Types the agent carries out.
const (
	TypeErase  = "erase"
	TypeExport = "export"
	TypePolicy = "policy"
	TypePing   = "ping"
	// TypeIdentityRotate makes a new call-signing key; the receipt carries
	// its public key.
	TypeIdentityRotate = "identity.rotate"
)

// AllDevices is the device of a fleet command.
const AllDevices = "*"

// Command is a verified command.
type Command struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Device    string          `json:"device"`
	IssuedAt  time.Time       `json:"issued_at"`
	ExpiresAt time.Time       `json:"expires_at"`
	Args      json.RawMessage `json:"args,omitempty"`
	// KeyID is the kid that signed it.
	KeyID string `json:"-"`
}

// Reason is why a command was rejected, as its receipt says.
type Reason string

// Rejection reasons (docs/protocol.md).
const (
	BadSignature Reason = "bad_signature"
	UnknownKey   Reason = "unknown_key"
	Expired      Reason = "expired"
	NotYetValid  Reason = "not_yet_valid"
	Replayed     Reason = "replayed"
	WrongDevice  Reason = "wrong_device"
	Malformed    Reason = "malformed"
	Unsupported  Reason = "unsupported"
	// StaleVersion: a policy whose version is not above the one in force.
	StaleVersion Reason = "stale_version"
)

// Rejection is a command that must not be carried out. ID is the command's
// id when it could be read (unverified for a bad signature), for the
// receipt.
type Rejection struct {
	Reason Reason
	Detail string
	ID     string
}

func (r *Rejection) Error() string {
	if r.Detail == "" {
		return string(r.Reason)
	}
	return string(r.Reason) + ": " + r.Detail
}

func reject(reason Reason, id, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, ID: id, Detail: fmt.Sprintf(format, args...)}
}

// Skew is the clock difference allowed between the platform and a device.
const Skew = 5 * time.Minute

// MaxSize bounds a command (an export's result goes in a receipt, not in
// a command; a policy is a few KiB).
const MaxSize = 256 << 10

// Verifier checks commands for one device.
type Verifier struct {
	Keys   map[string]ed25519.PublicKey
	Device string
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// Verify checks a command's signature, form, target and validity window
// at now. A *Rejection says why it must not be carried out.
func (v *Verifier) Verify(token []byte, now time.Time) (*Command, error) {
	if len(token) > MaxSize {
		return nil, reject(Malformed, "", "command is %d bytes, more than %d", len(token), MaxSize)
	}
	jws, err := jose.ParseSignedCompact(string(bytes.TrimSpace(token)), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, reject(BadSignature, "", "only EdDSA is accepted")
		}
		return nil, reject(Malformed, "", "not a compact JWS: %v", err)
	}
	unverifiedID := peekID(jws.UnsafePayloadWithoutVerification())
	if len(jws.Signatures) != 1 {
		return nil, reject(Malformed, unverifiedID, "want one signature, got %d", len(jws.Signatures))
	}
	kid := jws.Signatures[0].Protected.KeyID
	if kid == "" {
		return nil, reject(UnknownKey, unverifiedID, "no kid in the protected header")
	}
	key, ok := v.Keys[kid]
	if !ok {
		return nil, reject(UnknownKey, unverifiedID, "kid %q is not trusted", kid)
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, reject(BadSignature, unverifiedID, "signature does not verify with kid %q", kid)
	}
	var c Command
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, reject(Malformed, unverifiedID, "payload: %v", err)
	}
	c.KeyID = kid
	switch {
	case !idRE.MatchString(c.ID):
		return nil, reject(Malformed, "", "id %q is not 1-128 of [A-Za-z0-9._:-]", c.ID)
	case c.Type == "":
		return nil, reject(Malformed, c.ID, "type is missing")
	case c.Device == "":
		return nil, reject(Malformed, c.ID, "device is missing")
	case c.IssuedAt.IsZero() || c.ExpiresAt.IsZero():
		return nil, reject(Malformed, c.ID, "issued_at and expires_at are required")
	case !c.ExpiresAt.After(c.IssuedAt):
		return nil, reject(Malformed, c.ID, "expires_at is not after issued_at")
	}
	switch c.Type {
	case TypeErase, TypeExport, TypePolicy, TypePing, TypeIdentityRotate:
	default:
		return nil, reject(Unsupported, c.ID, "type %q", c.Type)
	}
	if c.Device != AllDevices && c.Device != v.Device {
		return nil, reject(WrongDevice, c.ID, "for device %q", c.Device)
	}
	if now.After(c.ExpiresAt.Add(Skew)) {
		return nil, reject(Expired, c.ID, "expired at %s", c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if c.IssuedAt.After(now.Add(Skew)) {
		return nil, reject(NotYetValid, c.ID, "issued at %s, in the future", c.IssuedAt.UTC().Format(time.RFC3339))
	}
	if err := c.checkArgs(); err != nil {
		return nil, reject(Malformed, c.ID, "args: %v", err)
	}
	return &c, nil
}

// peekID reads an id from a payload that is not verified yet, only to
// name the command in its rejection receipt.
func peekID(payload []byte) string {
	var p struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(payload, &p) != nil || !idRE.MatchString(p.ID) {
		return ""
	}
	return p.ID
}

// EraseArgs are an erase's arguments: a subject, or all.
type EraseArgs struct {
	Subject string `json:"subject,omitempty"`
	All     bool   `json:"all,omitempty"`
}

// ExportArgs are an export's.
type ExportArgs struct {
	Subject string `json:"subject"`
}

func strictDecode(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return errors.New("missing")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// checkArgs checks what this package can: the policy document is the
// rules' to read.
func (c *Command) checkArgs() error {
	switch c.Type {
	case TypeErase:
		var a EraseArgs
		if err := strictDecode(c.Args, &a); err != nil {
			return err
		}
		if (a.Subject == "") == !a.All {
			return errors.New(`want "subject" or "all": true, not both`)
		}
	case TypeExport:
		var a ExportArgs
		if err := strictDecode(c.Args, &a); err != nil {
			return err
		}
		if a.Subject == "" {
			return errors.New("subject is missing")
		}
	case TypePolicy:
		if len(c.Args) == 0 || c.Args[0] != '{' {
			return errors.New("want a policy document (an object)")
		}
	case TypePing, TypeIdentityRotate:
		if len(c.Args) > 0 && string(c.Args) != "null" && string(c.Args) != "{}" {
			return fmt.Errorf("%s takes no args", c.Type)
		}
	}
	return nil
}

// Erase returns an erase's arguments.
func (c *Command) Erase() EraseArgs {
	var a EraseArgs
	_ = json.Unmarshal(c.Args, &a) // checked by Verify
	return a
}

// Export returns an export's arguments.
func (c *Command) Export() ExportArgs {
	var a ExportArgs
	_ = json.Unmarshal(c.Args, &a)
	return a
}

// Sign makes the compact JWS of a command with the platform key kid.
func Sign(c Command, kid string, key ed25519.PrivateKey) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		return "", fmt.Errorf("signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return jws.CompactSerialize()
}
