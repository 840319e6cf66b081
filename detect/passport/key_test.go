package passport

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	k, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateKey = %v, %v; want a new key", created, err)
	}
	if d := time.Since(k.Created()); d < 0 || d > time.Minute {
		t.Errorf("Created = %v, not now", k.Created())
	}
	if k.Path() != path {
		t.Errorf("Path = %q", k.Path())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %#o, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte("Created: ")) {
		t.Errorf("file does not start with its Created line:\n%s", data)
	}
	// The block is plain PKCS#8, readable by anything that reads keys.
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || len(block.Headers) != 0 {
		t.Fatalf("PEM block %+v", block)
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Fatal(err)
	}
	assertNoTemp(t, filepath.Dir(path))

	again, created, err := LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreateKey = %v, %v; want the same key loaded", created, err)
	}
	if !again.PublicKey().Equal(k.PublicKey()) {
		t.Error("reload gave another key")
	}
	if !again.Created().Equal(k.Created()) {
		t.Errorf("reload Created = %v, want %v", again.Created(), k.Created())
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	const n = 8
	keys := make([]*FileKey, n)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	final, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if k != nil && !k.PublicKey().Equal(final.PublicKey()) {
			t.Errorf("goroutine %d holds a key that is not the one on disk", i)
		}
	}
	assertNoTemp(t, filepath.Dir(path))
}

func TestLoadKeyRefuses(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	good := pkcs8(newKey(t))
	tests := []struct {
		name string
		data []byte
		mode os.FileMode
		err  error
	}{
		// The first case shows the checks can pass, so the others fail
		// for their own reason.
		{"good", good, 0o600, nil},
		{"owner read only", good, 0o400, nil},
		{"group readable", good, 0o640, ErrKeyPermissions},
		{"world readable", good, 0o604, ErrKeyPermissions},
		{"P-384", pkcs8(p384), 0o600, ErrKeyType},
		{"Ed25519", pkcs8(edKey), 0o600, ErrKeyType},
		{"public key", PublicKeyPEM(&newKey(t).PublicKey), 0o600, ErrKeyFormat},
		{"not PEM", []byte("hello"), 0o600, ErrKeyFormat},
		{"empty", nil, 0o600, ErrKeyFormat},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 1, 2}}), 0o600, ErrKeyFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if runtime.GOOS == "windows" && errors.Is(tt.err, ErrKeyPermissions) {
				t.Skip("no permission bits on windows")
			}
			path := filepath.Join(t.TempDir(), "device.key")
			if err := os.WriteFile(path, tt.data, tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tt.mode) // WriteFile's mode is masked by umask
			_, err := LoadKey(path)
			if !errors.Is(err, tt.err) {
				t.Fatalf("LoadKey = %v, want %v", err, tt.err)
			}
			// LoadOrCreateKey must not replace a key it refuses.
			if _, created, err := LoadOrCreateKey(path); created || !errors.Is(err, tt.err) {
				t.Fatalf("LoadOrCreateKey = %v, %v; want %v", created, err, tt.err)
			}
		})
	}
}

func TestLoadKeyOtherForms(t *testing.T) {
	key := newKey(t)
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sec1.key")
	// What `openssl ecparam -genkey` writes: parameters, then a SEC 1 key.
	data := "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
	data += string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	os.Chtimes(path, mtime, mtime)
	k, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k.PublicKey().Equal(&key.PublicKey) {
		t.Error("another key loaded")
	}
	if !k.Created().Equal(mtime) {
		t.Errorf("Created = %v, want the modification time %v", k.Created(), mtime)
	}
}

func TestLoadKeyMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadKey(filepath.Join(dir, "none.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadKey of a missing file = %v", err)
	}
	_, _, err := LoadOrCreateKey(filepath.Join(dir, "no-such-dir", "device.key"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadOrCreateKey in a missing directory = %v", err)
	}
}

func TestRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	old, _, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := Rotate(path)
	if err != nil {
		t.Fatal(err)
	}
	if k.PublicKey().Equal(old.PublicKey()) {
		t.Fatal("Rotate kept the key")
	}
	loaded, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.PublicKey().Equal(k.PublicKey()) {
		t.Error("the file holds another key than Rotate returned")
	}
	if fi, _ := os.Stat(path); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %#o after Rotate", fi.Mode().Perm())
	}
	assertNoTemp(t, filepath.Dir(path))
}

func TestFileKeySigns(t *testing.T) {
	k, _, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	var s Signer = k
	digest := make([]byte, 32)
	sig, err := s.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest, sig) {
		t.Error("FileKey's signature does not verify")
	}
	// RFC 6979: the same digest gives the same signature, whatever reader
	// is passed; another digest another one.
	again, err := s.Sign(nil, digest, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sig, again) {
		t.Error("two signatures of one digest differ: the nonce is not RFC 6979's")
	}
	digest[0] = 1
	other, err := s.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sig, other) || !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest, other) {
		t.Error("the signature of another digest is the same, or does not verify")
	}
}

func TestThumbprint(t *testing.T) {
	for range 20 {
		key := newKey(t)
		jwk := jose.JSONWebKey{Key: &key.PublicKey}
		want, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if got := Thumbprint(&key.PublicKey); got != b64.EncodeToString(want) {
			t.Fatalf("Thumbprint = %s, go-jose says %s", got, b64.EncodeToString(want))
		}
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if got := Thumbprint(&p384.PublicKey); got != "" {
		t.Errorf("Thumbprint of a P-384 key = %q", got)
	}
}

func TestPublicKeyPEM(t *testing.T) {
	key := newKey(t)
	data := PublicKeyPEM(&key.PublicKey)
	if !strings.HasPrefix(string(data), "-----BEGIN PUBLIC KEY-----\n") {
		t.Fatalf("PublicKeyPEM:\n%s", data)
	}
	pub, err := ParsePublicKeyPEM(append([]byte("enrolled 2026-12-01\n"), data...))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&key.PublicKey) {
		t.Error("round trip gave another key")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if PublicKeyPEM(&p384.PublicKey) != nil || PublicKeyPEM(nil) != nil {
		t.Error("PublicKeyPEM of a key that is not P-256")
	}
	der, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	p384PEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if _, err := ParsePublicKeyPEM(p384PEM); !errors.Is(err, ErrKeyType) {
		t.Errorf("ParsePublicKeyPEM(P-384) = %v, want ErrKeyType", err)
	}
	if _, err := ParsePublicKeyPEM([]byte("nothing")); !errors.Is(err, ErrKeyFormat) {
		t.Errorf("ParsePublicKeyPEM(nothing) = %v, want ErrKeyFormat", err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}
