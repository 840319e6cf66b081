package passport

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecsipidx checks headers against libsecsipid, the library behind
// kamailio's secsipid module, through its command-line tool (Debian
// package secsipidx): it must accept what the agent sends, refuse what it
// should, and its tokens must parse here. secsipidx -check runs the same
// SJWTCheckFullIdentity as secsipid_check_identity(path).
func TestSecsipidx(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an external tool")
	}
	tool := needTool(t, "secsipidx")
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "device.key")
	key, _, err := LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(dir, "device.pub")
	if err := os.WriteFile(pubPath, PublicKeyPEM(key.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(value string) (bool, string) {
		out, err := exec.Command(tool, "-check", "-fpubkey", pubPath, "-expire", "300", "-identity", value).CombinedOutput()
		return err == nil && strings.Contains(string(out), "ok\n") && !strings.Contains(string(out), "not-ok"), string(out)
	}
	sign := func(h Header, mod func(*Claims)) string {
		c := claims()
		c.IssuedAt = time.Now().Unix()
		c.Verdict, c.Rules = Observed, []string{"pacing.rate"}
		if mod != nil {
			mod(&c)
		}
		tok, err := Sign(key, h, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	tok := sign(Header{X5U: info}, nil)
	tests := []struct {
		name  string
		value string
		ok    bool
	}{
		// The first passes, so the refusals are refusals of what they change.
		{"agent header", IdentityHeader(tok, info), true},
		{"spaces", " " + strings.ReplaceAll(IdentityHeader(tok, info), ";", " ; "), true},
		{"no x5u", IdentityHeader(sign(Header{}, nil), info), true},
		{"iat ahead", IdentityHeader(sign(Header{X5U: info}, func(c *Claims) { c.IssuedAt += 3600 }), info), true},
		{"info is not x5u", IdentityHeader(tok, "https://keys.leadport.example/d/other"), false},
		{"iat too old", IdentityHeader(sign(Header{X5U: info}, func(c *Claims) { c.IssuedAt -= 301 }), info), false},
		{"payload changed", IdentityHeader(swapPayload(t, tok, sign(Header{X5U: info}, func(c *Claims) { c.Counter++ })), info), false},
		{"ppt parameter", IdentityHeader(tok, info) + ";ppt=leadport", false},
		{"bare token", tok, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ok, out := check(tt.value); ok != tt.ok {
				t.Fatalf("secsipidx accepted=%v, want %v:\n%s", ok, tt.ok, out)
			}
		})
	}

	t.Run("its tokens parse here", func(t *testing.T) {
		c := claims()
		c.IssuedAt = time.Now().Unix()
		payload, _ := marshal(c)
		out, err := exec.Command(tool, "-sign", "-fprvkey", keyPath,
			"-header", `{"alg":"ES256","typ":"passport","x5u":"`+info+`"}`, "-payload", string(payload)).Output()
		if err != nil {
			t.Fatalf("secsipidx -sign: %v\n%s", err, out)
		}
		h, got, err := Parse(strings.TrimSpace(string(out)), key.PublicKey())
		if err != nil {
			t.Fatalf("Parse of secsipidx's token: %v", err)
		}
		if h.X5U != info || got.Counter != c.Counter || got.Device != c.Device {
			t.Fatalf("header %+v claims %+v", h, got)
		}
	})

	t.Run("its SHAKEN tokens are refused here", func(t *testing.T) {
		out, err := exec.Command(tool, "-sign-full", "-fprvkey", keyPath, "-x5u", info,
			"-orig-tn", "15551230001", "-dest-tn", "15551239999", "-attest", "A").Output()
		if err != nil {
			t.Fatalf("secsipidx -sign-full: %v\n%s", err, out)
		}
		id, err := ParseIdentity(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatalf("ParseIdentity of secsipidx's header: %v", err)
		}
		v := &Verifier{}
		if _, err := v.VerifyIdentity(id, key.PublicKey(), Expect{}); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("VerifyIdentity of a SHAKEN PASSporT = %v, want ErrUnsupported", err)
		}
	})
}

// TestKeyFileOpenSSL: the key file, Created line and all, is one OpenSSL
// reads (a PEM header there would not be).
func TestKeyFileOpenSSL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an external tool")
	}
	tool := needTool(t, "openssl")
	dir := t.TempDir()
	key, _, err := LoadOrCreateKey(filepath.Join(dir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "pkey", "-in", key.Path(), "-pubout").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkey: %v\n%s", err, out)
	}
	if string(out) != string(PublicKeyPEM(key.PublicKey())) {
		t.Fatalf("openssl reads another public key:\n%s", out)
	}
}

// swapPayload is a with the payload of b: signature of one, claims of the
// other.
func swapPayload(t *testing.T, a, b string) string {
	t.Helper()
	ha, _, sa, _ := segments(a)
	_, pb, _, _ := segments(b)
	return ha + "." + pb + "." + sa
}

// needTool finds an external program; with LEADPORT_E2E=1 (make test, after
// scripts/setup.sh installed it) its absence fails the test.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("LEADPORT_E2E") == "1" {
		t.Fatalf("%s is not installed (Debian package %s; scripts/setup.sh installs it)", name, name)
	}
	t.Skipf("%s is not installed (apt install %s)", name, name)
	return ""
}
