package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/passport"
)

// errInvalid makes `fleet verify` exit 1 after it printed why.
var errInvalid = errors.New("the Identity is not valid")

// fleetVerify checks the Identity header of one SIP request (raw text, as
// a capture or a log shows it) against a device's enrolled public key, as
// the platform's edge would: it prints the claims and the verdict, and
// exits 1 when the header is not valid.
func fleetVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "the device's public key, PEM (leadport-agent identity prints it); required")
	at := fs.String("at", "", "verify as of this time (RFC 3339), e.g. when the request was captured; default now")
	window := fs.Duration("window", passport.DefaultWindow, "how far iat may be from that time, either way")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" || fs.NArg() > 1 {
		return errUsage
	}
	src := "-"
	if fs.NArg() == 1 {
		src = fs.Arg(0)
	}
	pemData, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	pub, err := passport.ParsePublicKeyPEM(pemData)
	if err != nil {
		return err
	}
	now := time.Now()
	if *at != "" {
		if now, err = time.Parse(time.RFC3339, *at); err != nil {
			return fmt.Errorf("--at: %w", err)
		}
	}
	raw, err := readFileOrStdin(src)
	if err != nil {
		return err
	}
	req, err := parseRawRequest(raw)
	if err != nil {
		return err
	}
	v := &passport.Verifier{Window: *window, Now: func() time.Time { return now }}
	claims, verr := v.Verify(req, pub)
	if claims != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(claims)
	}
	if verr != nil {
		fmt.Fprintf(stdout, "INVALID: %v\n", verr)
		return errInvalid
	}
	fmt.Fprintf(stdout, "VALID: signed by key %s for device %s, counter %d\n", passport.Thumbprint(pub), claims.Device, claims.Counter)
	return nil
}

// parseRawRequest reads a SIP request as people paste it: LF or CRLF line
// ends, with a body or without, its Content-Length made to fit what is
// there (the Identity does not cover the body).
func parseRawRequest(raw []byte) (*sip.Request, error) {
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	head, body, _ := bytes.Cut(bytes.TrimLeft(raw, "\n"), []byte("\n\n"))
	var msg []byte
	for _, l := range bytes.Split(head, []byte("\n")) {
		name, _, _ := bytes.Cut(l, []byte(":"))
		if n := string(bytes.TrimSpace(name)); strings.EqualFold(n, "content-length") || n == "l" {
			continue
		}
		msg = append(append(msg, l...), "\r\n"...)
	}
	msg = fmt.Appendf(msg, "Content-Length: %d\r\n\r\n", len(body))
	msg = append(msg, body...)
	m, err := sip.ParseMessage(msg)
	if err != nil {
		return nil, fmt.Errorf("not a SIP message: %w", err)
	}
	req, ok := m.(*sip.Request)
	if !ok {
		return nil, errors.New("a SIP response, not a request")
	}
	return req, nil
}
