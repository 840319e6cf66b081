package command

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func keyPair(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func valid() Command {
	return Command{ID: "cmd-1", Type: TypeErase, Device: "pbx-0042", IssuedAt: now.Add(-time.Minute),
		ExpiresAt: now.Add(time.Hour), Args: json.RawMessage(`{"subject":"+15551234567"}`)}
}

func sign(t testing.TB, c Command, kid string, key ed25519.PrivateKey) []byte {
	t.Helper()
	s, err := Sign(c, kid, key)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// TestVerify is the command matrix of issue 5 at the verifier: each case
// gets its reason, and only the valid ones pass.
func TestVerify(t *testing.T) {
	pub, priv := keyPair(t)
	_, other := keyPair(t)
	v := &Verifier{Keys: map[string]ed25519.PublicKey{"platform-2026": pub}, Device: "pbx-0042"}
	with := func(f func(c *Command)) Command {
		c := valid()
		f(&c)
		return c
	}
	// A token whose payload is not a command at all, correctly signed.
	rawSigned := func(payload string) []byte {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: priv, KeyID: "platform-2026"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		j, err := s.Sign([]byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := j.CompactSerialize()
		return []byte(out)
	}
	tampered := sign(t, valid(), "platform-2026", priv)
	parts := strings.Split(string(tampered), ".")
	evil, _ := json.Marshal(with(func(c *Command) { c.Args = json.RawMessage(`{"all":true}`) }))
	parts[1] = base64.RawURLEncoding.EncodeToString(evil)
	tamperedToken := []byte(strings.Join(parts, "."))

	tests := []struct {
		name  string
		token []byte
		want  Reason // "" for valid
		id    string // id named in the rejection
	}{
		{"valid", sign(t, valid(), "platform-2026", priv), "", ""},
		{"valid fleet command", sign(t, with(func(c *Command) { c.Device = "*" }), "platform-2026", priv), "", ""},
		{"valid within the skew", sign(t, with(func(c *Command) { c.IssuedAt = now.Add(4 * time.Minute) }), "platform-2026", priv), "", ""},
		{"ping", sign(t, with(func(c *Command) { c.Type, c.Args = TypePing, nil }), "platform-2026", priv), "", ""},
		{"bad signature", sign(t, valid(), "platform-2026", other), BadSignature, "cmd-1"},
		{"payload swapped after signing", tamperedToken, BadSignature, "cmd-1"},
		{"unknown kid", sign(t, valid(), "platform-2099", priv), UnknownKey, "cmd-1"},
		{"expired", sign(t, with(func(c *Command) { c.IssuedAt, c.ExpiresAt = now.Add(-2*time.Hour), now.Add(-6*time.Minute) }), "platform-2026", priv), Expired, "cmd-1"},
		{"issued in the future", sign(t, with(func(c *Command) { c.IssuedAt, c.ExpiresAt = now.Add(10*time.Minute), now.Add(time.Hour) }), "platform-2026", priv), NotYetValid, "cmd-1"},
		{"another device", sign(t, with(func(c *Command) { c.Device = "pbx-0043" }), "platform-2026", priv), WrongDevice, "cmd-1"},
		{"malformed JSON", rawSigned(`{"id":"cmd-9","type":`), Malformed, ""},
		{"unknown field", rawSigned(`{"id":"cmd-8","type":"ping","device":"*","issued_at":"2026-11-27T11:00:00Z","expires_at":"2026-11-28T11:00:00Z","force":true}`), Malformed, "cmd-8"},
		{"unknown type", sign(t, with(func(c *Command) { c.Type = "reboot" }), "platform-2026", priv), Unsupported, "cmd-1"},
		{"erase without subject", sign(t, with(func(c *Command) { c.Args = json.RawMessage(`{}`) }), "platform-2026", priv), Malformed, "cmd-1"},
		{"erase subject and all", sign(t, with(func(c *Command) { c.Args = json.RawMessage(`{"subject":"+15551234567","all":true}`) }), "platform-2026", priv), Malformed, "cmd-1"},
		{"bad id", sign(t, with(func(c *Command) { c.ID = "has space" }), "platform-2026", priv), Malformed, ""},
		{"missing times", sign(t, with(func(c *Command) { c.IssuedAt = time.Time{} }), "platform-2026", priv), Malformed, "cmd-1"},
		{"not a JWS", []byte("hello"), Malformed, ""},
		{"HS256", hs256(t), BadSignature, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.token, now)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.KeyID != "platform-2026" {
					t.Errorf("kid = %q", c.KeyID)
				}
				return
			}
			var r *Rejection
			if !errors.As(err, &r) {
				t.Fatalf("Verify = %v, %v; want a rejection %s", c, err, tt.want)
			}
			if r.Reason != tt.want || r.ID != tt.id {
				t.Errorf("rejection = %s (id %q), want %s (id %q)", r, r.ID, tt.want, tt.id)
			}
		})
	}
}

// hs256 is a JWS with a symmetric algorithm: never accepted.
func hs256(t *testing.T) []byte {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := s.Sign([]byte(`{"id":"x"}`))
	out, _ := j.CompactSerialize()
	return []byte(out)
}

func TestArgs(t *testing.T) {
	pub, priv := keyPair(t)
	v := &Verifier{Keys: map[string]ed25519.PublicKey{"k": pub}, Device: "d"}
	c := valid()
	c.Device = "d"
	c.Args = json.RawMessage(`{"all":true}`)
	got, err := v.Verify(sign(t, c, "k", priv), now)
	if err != nil {
		t.Fatal(err)
	}
	if a := got.Erase(); !a.All || a.Subject != "" {
		t.Errorf("Erase() = %+v, want all", a)
	}
	c.Type, c.Args = TypeExport, json.RawMessage(`{"subject":"+15551234567"}`)
	if got, err = v.Verify(sign(t, c, "k", priv), now); err != nil || got.Export().Subject != "+15551234567" {
		t.Errorf("export = %+v, %v", got, err)
	}
}

// FuzzVerify: any bytes are a command or a rejection, never a panic.
func FuzzVerify(f *testing.F) {
	pub, priv := keyPair(f)
	v := &Verifier{Keys: map[string]ed25519.PublicKey{"k": pub}, Device: "d"}
	c := valid()
	c.Device = "d"
	f.Add(sign(f, c, "k", priv))
	f.Add([]byte("eyJhbGciOiJFZERTQSIsImtpZCI6ImsifQ.e30.AAAA"))
	f.Add([]byte("a.b.c"))
	f.Fuzz(func(t *testing.T, token []byte) {
		got, err := v.Verify(token, now)
		if err == nil && (got == nil || got.KeyID != "k") {
			t.Fatalf("accepted without a verified kid: %+v", got)
		}
		var r *Rejection
		if err != nil && !errors.As(err, &r) {
			t.Fatalf("error that is not a rejection: %v", err)
		}
	})
}
