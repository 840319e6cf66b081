package passport_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/passport"
)

// The agent signs an INVITE it relays; the edge verifies it with the key
// the device enrolled.
func Example() {
	// On the device: the key (a FileKey or a TPM-held crypto.Signer).
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const info = "https://keys.leadport.example/d/pbx-0042"
	now := time.Date(2027, 1, 1, 12, 0, 0, 0, time.UTC)

	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "+15551239999", Host: "edge.leadport.example"})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+15551230001", Host: "pbx.example"}, Params: sip.NewParams()}
	from.Params.Add("tag", "1928301774")
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: req.Recipient, Params: sip.NewParams()})
	callID := sip.CallIDHeader("a84b4c76e66710@pbx.example")
	req.AppendHeader(&callID)

	token, err := passport.Sign(key, passport.Header{X5U: info}, passport.Claims{
		CallBinding: passport.Binding(callID.Value(), "1928301774"),
		Counter:     1,
		Dest:        passport.Dest{TN: []string{"+15551239999"}},
		Device:      "pbx-0042",
		IssuedAt:    now.Unix(),
		Orig:        passport.Orig{TN: "+15551230001"},
		OrigID:      passport.NewOrigID(),
		Policy:      3,
		Verdict:     passport.Allowed,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	value := passport.IdentityHeader(token, info)
	req.AppendHeader(sip.NewHeader("Identity", value))
	fmt.Println(strings.Count(token, "."), strings.TrimPrefix(value, token))

	// At the edge.
	v := &passport.Verifier{Now: func() time.Time { return now.Add(2 * time.Second) }}
	c, err := v.Verify(req, &key.PublicKey)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Device, c.Counter, c.Orig.TN, c.Dest.TN, c.Verdict)

	// The same INVITE again, as a replay.
	_, err = v.Verify(req, &key.PublicKey)
	fmt.Println(errors.Is(err, passport.ErrReplay))
	// Output:
	// 2 ;info=<https://keys.leadport.example/d/pbx-0042>;alg=ES256
	// pbx-0042 1 15551230001 [15551239999] allowed
	// true
}

func ExampleCanonical() {
	for _, tn := range []string{"+1 (555) 123-4567", "*72", "alice"} {
		c, err := passport.Canonical(tn)
		fmt.Printf("%q %v\n", c, errors.Is(err, passport.ErrNotNumber))
	}
	// Output:
	// "15551234567" false
	// "*72" false
	// "" true
}

func ExampleParseIdentity() {
	id, err := passport.ParseIdentity("eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjF9.c2ln ; alg=ES256 ; info=<https://keys.example/k1>")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(id.Info, id.Alg)
	fmt.Println(id)

	_, err = passport.ParseIdentity("eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjF9.c2ln;alg=ES256")
	fmt.Println(err)
	// Output:
	// https://keys.example/k1 ES256
	// eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjF9.c2ln;info=<https://keys.example/k1>;alg=ES256
	// passport: malformed: no info parameter
}

func ExampleBinding() {
	fmt.Println(passport.Binding("a84b4c76e66710@pbx.example", "1928301774"))
	// Output:
	// cbkFP75WkfbOorUmvNMUrvsXk-s3qfuqmo8gM1KfmEQ
}

func ExampleLoadOrCreateKey() {
	dir, _ := os.MkdirTemp("", "passport")
	defer os.RemoveAll(dir)
	key, created, err := passport.LoadOrCreateKey(dir + "/device.key")
	if err != nil {
		fmt.Println(err)
		return
	}
	// The platform enrols the public key and names it by its thumbprint.
	pemBytes := passport.PublicKeyPEM(key.PublicKey())
	fmt.Println(created, strings.HasPrefix(string(pemBytes), "-----BEGIN PUBLIC KEY-----"), len(passport.Thumbprint(key.PublicKey())))

	_, created, _ = passport.LoadOrCreateKey(dir + "/device.key")
	fmt.Println(created)
	// Output:
	// true true 43
	// false
}
