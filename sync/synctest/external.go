package synctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NeedBinary finds a program the test needs: with LEADPORT_E2E=1 (as
// `make test` sets, after scripts/setup.sh installed it) its absence fails
// the test, otherwise it skips.
func NeedBinary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExec(p) {
			return p
		}
	}
	if os.Getenv("LEADPORT_E2E") == "1" {
		t.Fatalf("%s is not installed (scripts/setup.sh installs it)", name)
	}
	t.Skipf("%s is not installed", name)
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&0o111 != 0
}

// PKI is a test CA with a server certificate for 127.0.0.1 and client
// certificates by common name, as PEM files in Dir.
type PKI struct {
	Dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

// NewPKI makes the CA and the server certificate (ca.pem, server.pem,
// server-key.pem).
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), serial: 1}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: "leadport test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.write(t, "ca.pem", "CERTIFICATE", der)
	p.issue(t, "server", &x509.Certificate{
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return p
}

func (p *PKI) write(t testing.TB, name, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(p.Dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (p *PKI) issue(t testing.TB, name string, tmpl *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl.SerialNumber = big.NewInt(p.serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.write(t, name+".pem", "CERTIFICATE", der)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p.write(t, name+"-key.pem", "EC PRIVATE KEY", kb)
}

// Client issues a client certificate whose common name is cn (the device
// id: mosquitto takes it as the username) and returns the TLS config to
// use it.
func (p *PKI) Client(t testing.TB, cn string) *tls.Config {
	t.Helper()
	p.issue(t, "client-"+cn, &x509.Certificate{Subject: pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	cert, err := tls.LoadX509KeyPair(p.Path("client-"+cn+".pem"), p.Path("client-"+cn+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// Path is a file of the PKI.
func (p *PKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// External is a broker process started by a test.
type External struct {
	Addr string
	cmd  *exec.Cmd
	log  string
}

// StartMosquitto runs Debian's mosquitto on a free loopback port with TLS
// (client certificates required, the common name as username) and the
// given ACL file contents.
func StartMosquitto(t testing.TB, pki *PKI, acl string) *External {
	t.Helper()
	bin := NeedBinary(t, "mosquitto")
	dir := t.TempDir()
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	aclFile := filepath.Join(dir, "acl")
	if err := os.WriteFile(aclFile, []byte(acl), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := runAs() + fmt.Sprintf(`per_listener_settings false
persistence false
allow_anonymous false
acl_file %s
listener %s 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
max_inflight_messages 100
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
`, aclFile, port, pki.Path("ca.pem"), pki.Path("server.pem"), pki.Path("server-key.pem"))
	return startExternal(t, dir, addr, bin, "mosquitto.conf", conf, "-c")
}

// StartMosquittoPlain runs mosquitto on a free loopback port without TLS
// or authentication, for benchmarks.
func StartMosquittoPlain(t testing.TB) *External {
	t.Helper()
	bin := NeedBinary(t, "mosquitto")
	dir := t.TempDir()
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := runAs() + fmt.Sprintf("persistence false\nallow_anonymous true\nlistener %s 127.0.0.1\nmax_inflight_messages 100\nmax_queued_messages 100000\nlog_dest stderr\nlog_type error\n", port)
	return startExternal(t, dir, addr, bin, "mosquitto.conf", conf, "-c")
}

// runAs keeps mosquitto as the user that started it: started as root it
// would switch to the mosquitto user, which cannot read the test's files.
func runAs() string {
	if os.Geteuid() == 0 {
		return "user root\n"
	}
	return ""
}

// StartNATS runs Debian's nats-server with MQTT (which needs JetStream)
// on free loopback ports.
func StartNATS(t testing.TB) *External {
	t.Helper()
	bin := NeedBinary(t, "nats-server")
	dir := t.TempDir()
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	natsAddr := FreeAddr(t)
	_, natsPort, _ := net.SplitHostPort(natsAddr)
	conf := fmt.Sprintf(`server_name: leadport_test
listen: 127.0.0.1:%s
jetstream {
  store_dir: %q
}
mqtt {
  listen: 127.0.0.1:%s
}
`, natsPort, filepath.Join(dir, "js"), port)
	return startExternal(t, dir, addr, bin, "nats.conf", conf, "-c")
}

func startExternal(t testing.TB, dir, addr, bin, confName, conf, flag string) *External {
	t.Helper()
	confFile := filepath.Join(dir, confName)
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &External{Addr: addr, log: filepath.Join(dir, "broker.log")}
	out, err := os.Create(e.log)
	if err != nil {
		t.Fatal(err)
	}
	e.cmd = exec.Command(bin, flag, confFile)
	e.cmd.Stdout, e.cmd.Stderr = out, out
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { e.cmd.Wait(); out.Close(); close(done) }()
	t.Cleanup(func() {
		e.cmd.Process.Kill()
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(e.log)
			t.Logf("%s log:\n%s", filepath.Base(bin), b)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return e
		}
		select {
		case <-done:
			b, _ := os.ReadFile(e.log)
			t.Fatalf("%s exited at start:\n%s", bin, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(e.log)
			t.Fatalf("%s not listening on %s after 20 s:\n%s", bin, addr, strings.TrimSpace(string(b)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
