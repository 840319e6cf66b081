package doctor

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// clientCert reports the dates of the client certificate the agent shows
// the broker (mqtt.tls.cert_file); nothing when none is configured.
type clientCert struct{}

func (clientCert) Name() string { return "client cert" }

func (c clientCert) Run(_ context.Context, env *Env) []Result {
	file := env.Config.MQTT.TLS.CertFile
	if file == "" {
		return nil
	}
	return []Result{c.check(file)}
}

func (clientCert) check(file string) Result {
	var r Result
	data, err := os.ReadFile(file)
	if err != nil {
		r.Status, r.Found = Fail, fmt.Sprintf("mqtt.tls.cert_file %s: %v", file, pathErr(err))
		r.Fix = "install the client certificate Leadport gave you there, or correct mqtt.tls.cert_file"
		return r
	}
	var leaf *x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			if leaf, err = x509.ParseCertificate(b.Bytes); err != nil {
				r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("%s: %v", file, err), "install the client certificate Leadport gave you"
				return r
			}
			break
		}
	}
	if leaf == nil {
		r.Status, r.Found, r.Fix = Fail, file+" holds no PEM certificate", "install the client certificate Leadport gave you"
		return r
	}
	who := leaf.Subject.CommonName
	if who == "" {
		who = leaf.Subject.String()
	}
	left := time.Until(leaf.NotAfter)
	switch {
	case left <= 0:
		r.Status = Fail
		r.Found = fmt.Sprintf("%s (%s) expired %s", file, who, date(leaf.NotAfter))
		r.Fix = "the broker refuses an expired certificate: ask Leadport for a new one"
	case left < certWarn:
		r.Status = Warn
		r.Found = fmt.Sprintf("%s (%s) expires %s (in %s)", file, who, date(leaf.NotAfter), days(left))
		r.Fix = "ask Leadport for a new client certificate before it expires: the broker refuses an expired one"
	case time.Now().Before(leaf.NotBefore):
		r.Status = Fail
		r.Found = fmt.Sprintf("%s (%s) is valid only from %s", file, who, date(leaf.NotBefore))
		r.Fix = "check this host's clock"
	default:
		r.Status = OK
		r.Found = fmt.Sprintf("%s (%s) valid until %s", file, who, date(leaf.NotAfter))
	}
	return r
}
