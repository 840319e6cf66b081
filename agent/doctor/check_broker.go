package doctor

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/leadport/leadport-agent/agent"
)

// errNoAnswer is a peer that said nothing before the doctor's deadline.
var errNoAnswer = errors.New("no answer")

// broker connects to each MQTT broker as the agent would (its TLS files,
// its password), under a client id of the doctor's own, and reads the
// server certificate's dates for the clock check.
type broker struct{}

func (broker) Name() string { return "broker" }

func (c broker) Run(ctx context.Context, env *Env) []Result {
	m := env.Config.MQTT
	if len(m.Brokers) == 0 {
		return []Result{{Status: Warn,
			Found: "mqtt.brokers is empty: no sync, records wait in the store",
			Fix:   "set mqtt.brokers to the broker Leadport gave you (e.g. ssl://mqtt.leadport.example:8883)"}}
	}
	tlsConf, tlsErr := agent.MQTTTLS(m)
	var password string
	var pwErr error
	if m.PasswordFile != "" {
		var b []byte
		if b, pwErr = os.ReadFile(m.PasswordFile); pwErr == nil {
			password = strings.TrimRight(string(b), "\r\n")
		} else {
			pwErr = fmt.Errorf("mqtt.password_file: %w", pwErr)
		}
	}
	// Never the device id itself: the broker would take this connection
	// for the agent's and drop the running agent's session.
	deviceID := env.Config.DeviceID
	if deviceID == "" && env.agentRunning() {
		deviceID = env.api.deviceID
	}
	clientID := deviceID + "-doctor"
	if deviceID == "" {
		b := make([]byte, 4)
		rand.Read(b)
		clientID = "leadport-doctor-" + hex.EncodeToString(b)
	}
	results := make([]func() []Result, len(m.Brokers))
	for i, b := range m.Brokers {
		results[i] = async(func() []Result {
			return []Result{c.check(ctx, env, b, clientID, tlsConf, tlsErr, password, pwErr)}
		})
	}
	var out []Result
	for _, f := range results {
		out = append(out, f()...)
	}
	return out
}

func (broker) check(ctx context.Context, env *Env, addr, clientID string, tlsConf *tls.Config, tlsErr error, password string, pwErr error) Result {
	var r Result
	u, err := url.Parse(addr)
	if err != nil { // validated by config already
		r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("%s: %v", addr, err), "correct mqtt.brokers"
		return r
	}
	secure := u.Scheme == "ssl" || u.Scheme == "wss"

	// The server certificate's dates, read on a connection of its own so
	// that an expired or untrusted certificate can still be described;
	// whether it is trusted is what the MQTT connection below finds out.
	var certNote, certFix string
	var certStatus Status
	var probeErr error
	if secure {
		host := u.Hostname()
		if tlsConf != nil && tlsConf.ServerName != "" {
			host = tlsConf.ServerName
		}
		var leaf *x509.Certificate
		if leaf, probeErr = peerCert(ctx, u.Host, host); probeErr == nil {
			env.sawCert(leaf, addr)
			left := time.Until(leaf.NotAfter)
			switch {
			case left <= 0:
				certStatus = Fail
				certNote = fmt.Sprintf("server certificate expired %s", date(leaf.NotAfter))
				certFix = "the broker's certificate has expired: tell Leadport support (or correct this host's clock if it is wrong)"
			case left < certWarn:
				certStatus = Warn
				certNote = fmt.Sprintf("server certificate expires %s (in %s)", date(leaf.NotAfter), days(left))
				certFix = "the broker's certificate expires soon: tell Leadport support"
			default:
				certNote = fmt.Sprintf("server certificate valid until %s", date(leaf.NotAfter))
			}
		}
	}
	// Without its TLS files (even for a tcp:// broker: the agent loads
	// them before it starts sync) or password the agent cannot connect
	// either; say so, with what the certificate probe found.
	if setupErr := cmp.Or(tlsErr, pwErr); setupErr != nil {
		r.Status = Fail
		r.Found = fmt.Sprintf("%s: %v", addr, setupErr)
		switch {
		case certNote != "":
			r.Found += "; reachable, " + certNote
		case probeErr != nil:
			r.Found += fmt.Sprintf("; the broker is not reachable either: %v", probeErr)
		}
		switch {
		case setupErr == pwErr:
			r.Fix = "put the password Leadport gave you in mqtt.password_file (chmod 600), or correct the path"
		case errors.Is(setupErr, fs.ErrNotExist):
			r.Fix = "install the file Leadport gave you at the path in mqtt.tls, or correct the path"
		default:
			r.Fix = "correct mqtt.tls: the files must be PEM, readable by the agent, and the certificate must match its key"
		}
		return r
	}

	opts := mqtt.NewClientOptions().
		AddBroker(addr).
		SetClientID(clientID).
		SetCleanSession(true).
		SetConnectTimeout(brokerTimeout).
		SetWriteTimeout(brokerTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false)
	if secure {
		opts.SetTLSConfig(tlsConf.Clone())
	}
	if env.Config.MQTT.Username != "" {
		opts.SetUsername(env.Config.MQTT.Username)
		opts.SetPassword(password)
	}
	cli := mqtt.NewClient(opts)
	start := time.Now()
	tok := cli.Connect()
	var connErr error
	if !tok.WaitTimeout(brokerTimeout + 2*time.Second) {
		connErr = fmt.Errorf("%w within %s", errNoAnswer, brokerTimeout)
	} else {
		connErr = tok.Error()
	}
	rtt := time.Since(start)
	if connErr == nil {
		cli.Disconnect(0)
	}

	var notes []string
	if connErr == nil {
		notes = append(notes, fmt.Sprintf("connected in %s as %s", ms(rtt), clientID))
	} else {
		// paho puts "network Error : " before what the network said.
		notes = append(notes, "cannot connect: "+strings.TrimPrefix(connErr.Error(), packets.ErrorNetworkError.Error()+" : "))
	}
	if certNote != "" {
		notes = append(notes, certNote)
	}
	r.Found = addr + ": " + strings.Join(notes, "; ")
	switch {
	case connErr != nil:
		r.Status = Fail
		r.Fix = brokerFix(connErr, u, clientID)
		if certStatus == Fail {
			r.Fix = certFix
		}
	case certStatus != "":
		r.Status, r.Fix = certStatus, certFix
	default:
		r.Status = OK
	}
	return r
}

// brokerFix says what to do about a failed connection.
func brokerFix(err error, u *url.URL, clientID string) string {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &unknownCA):
		return "this host does not trust the broker's certificate: set mqtt.tls.ca_file to the CA file Leadport gave you"
	case errors.As(err, &hostErr):
		return fmt.Sprintf("the broker's certificate is not for %s: use the broker name Leadport gave you in mqtt.brokers", u.Hostname())
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the certificate is expired or not yet valid: check this host's clock, then tell Leadport support"
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return "the broker refused this device's credentials: check mqtt.username, mqtt.password_file and the client certificate (mqtt.tls)"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return fmt.Sprintf("the broker rejected the client id %s: tell Leadport support", clientID)
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return "the broker is up but not taking clients: try again later, or tell Leadport support"
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("%s does not resolve: check the name in mqtt.brokers and this host's DNS", u.Hostname())
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens on %s: check the port in mqtt.brokers (ssl is usually 8883), or a firewall rejecting it", u.Host)
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, errNoAnswer):
		return fmt.Sprintf("no answer from %s: a firewall may drop outgoing TCP to port %s; check the address in mqtt.brokers", u.Host, u.Port())
	}
	return "check mqtt.brokers, mqtt.tls and the network"
}

// peerCert reads the server's certificate without judging it.
func peerCert(ctx context.Context, addr, serverName string) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	dl := tls.Dialer{Config: &tls.Config{
		ServerName: serverName,
		// Only the dates are read here and nothing is sent; the MQTT
		// connection that follows verifies the certificate.
		InsecureSkipVerify: true, //nolint:gosec // read-only probe, see above
		MinVersion:         tls.VersionTLS12,
	}}
	conn, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs[0], nil
}

// sawCert keeps the latest start of validity of a broker certificate, for
// the clock check.
func (env *Env) sawCert(c *x509.Certificate, from string) {
	env.mu.Lock()
	defer env.mu.Unlock()
	if c.NotBefore.After(env.notBefore) {
		env.notBefore, env.notBeforeOf = c.NotBefore, from
	}
}
