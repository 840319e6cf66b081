package config

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/leadport/leadport-agent/store/phone"
)

// Validate checks values and the rules between them. Parse has already
// called it; call it again on a Config built or changed in code. It returns
// nil or an *Error whose problems have keys but no file or line.
func (c *Config) Validate() error {
	if ps := c.problems(); len(ps) > 0 {
		return &Error{Problems: ps}
	}
	return nil
}

// maxSize32 bounds the store on 32-bit builds: bbolt maps the whole file
// into memory and compaction maps a second copy, and both must fit in the
// address space next to the rest of the process.
const maxSize32 = 1 * GiB

// sunPathMax is the longest unix socket path Linux accepts (sun_path is
// 108 bytes including the terminating NUL). A longer path only fails at
// bind time, after the service has started.
const sunPathMax = 107

var (
	idRE      = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	countryRE = regexp.MustCompile(`^[1-9][0-9]{0,2}$`)
)

type checker struct{ probs []Problem }

func (ck *checker) add(key, format string, args ...any) {
	ck.probs = append(ck.probs, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (ck *checker) oneOf(key, got string, want ...string) {
	if !slices.Contains(want, got) {
		ck.add(key, "bad value %s (want %s)", quote(got), orList(want))
	}
}

func orList(xs []string) string {
	if len(xs) == 1 {
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

func (c *Config) problems() []Problem {
	ck := &checker{}

	if c.DeviceID != "" && !idRE.MatchString(c.DeviceID) {
		ck.add("device_id", "bad device id %s (want 1-64 letters, digits, '.', '_' or '-')", quote(c.DeviceID))
	}
	if c.DataDir == "" {
		ck.add("data_dir", "must not be empty (default %s as root, ~/.local/state/leadport-agent otherwise)", DefaultDataDirRoot)
	}
	countryOK := c.DefaultCountry == "" || countryRE.MatchString(c.DefaultCountry)
	if !countryOK {
		ck.add("default_country", "bad calling code %s (want 1-3 digits without '+', not starting with 0, e.g. \"1\" or \"44\")", quote(c.DefaultCountry))
	} else {
		// With a bad default_country every national number would fail
		// too; one problem about the cause is enough.
		c.checkLines(ck)
	}

	c.checkMemory(ck)
	c.checkStore(ck)
	c.checkSIP(ck)
	c.checkPolicy(ck)
	c.checkMQTT(ck)
	c.checkCommands(ck)
	c.checkAPI(ck)
	ck.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	ck.oneOf("log.format", c.Log.Format, "text", "json")
	return ck.probs
}

// normalizeLines rewrites lines to E.164 where they normalise; the ones
// that do not are left for checkLines to report.
func (c *Config) normalizeLines() {
	if c.DefaultCountry != "" && !countryRE.MatchString(c.DefaultCountry) {
		return
	}
	for i, l := range c.Lines {
		if n, err := phone.Normalize(l, c.DefaultCountry); err == nil {
			c.Lines[i] = n
		}
	}
}

func (c *Config) checkLines(ck *checker) {
	first := map[string]int{}
	for i, l := range c.Lines {
		key := indexKey("lines", i)
		n, err := phone.Normalize(l, c.DefaultCountry)
		if err != nil {
			// phone keeps numbers out of its errors; this is belt and braces.
			msg := strings.ReplaceAll(err.Error(), l, maskPhone(l))
			ck.add(key, "%s is not a usable phone number: %s", maskPhone(l), msg)
			continue
		}
		if n != l {
			ck.add(key, "%s is not normalised (want %s)", maskPhone(l), maskPhone(n))
		}
		if j, dup := first[n]; dup {
			ck.add(key, "duplicate of lines[%d] (both are %s)", j, maskPhone(n))
			continue
		}
		first[n] = i
	}
}

// maskPhone shows a line in a message without giving the number away.
func maskPhone(s string) string {
	if s == "" {
		return `""`
	}
	return phone.Mask(s)
}

func (c *Config) checkMemory(ck *checker) {
	if c.MemoryBudget < MinMemoryBudget {
		ck.add("memory_budget", "%s is too small (want at least %s)", c.MemoryBudget, ByteSize(MinMemoryBudget))
	}
}

func (c *Config) checkStore(ck *checker) {
	switch {
	case c.Store.MaxSize < MiB:
		ck.add("store.max_size", "%s is too small (want at least 1MiB)", c.Store.MaxSize)
	case intSize == 32 && c.Store.MaxSize > maxSize32:
		ck.add("store.max_size", "%s is too large for a 32-bit build (at most 1GiB: bbolt maps the whole file, and compaction a second copy)", c.Store.MaxSize)
	}
}

func (c *Config) checkSIP(ck *checker) {
	s := &c.SIP
	switch s.Mode {
	case ModeProxy:
	case ModeCapture:
		ck.add("sip.mode", "capture mode is not implemented yet (want proxy)")
	default:
		ck.add("sip.mode", "bad mode %s (want proxy; capture is not implemented yet)", quote(string(s.Mode)))
	}
	if s.Mode == ModeProxy && len(s.Listen) == 0 {
		ck.add("sip.listen", "proxy mode needs at least one listener (default: udp://0.0.0.0:5060 and tcp://0.0.0.0:5060)")
	}
	hasTLSFiles := s.TLS.CertFile != "" && s.TLS.KeyFile != ""
	ck.oneOf("sip.register_mode", s.RegisterMode, "path", "contact")
	ck.oneOf("sip.identity", s.Identity, IdentitySign, IdentityOff)
	if s.MaxCallS < 60 || s.MaxCallS > 7*86400 {
		ck.add("sip.max_call_s", "%d is not allowed (want seconds, 60 to 604800)", s.MaxCallS)
	}
	if s.TransactionLingerMS < 0 || s.TransactionLingerMS > 32000 {
		ck.add("sip.transaction_linger_ms", "%d is not allowed (want milliseconds, 0 to 32000)", s.TransactionLingerMS)
	}
	if s.Advertise != "" {
		if err := checkHost(s.Advertise); err != nil {
			ck.add("sip.advertise", "%v", err)
		}
	}
	bound := map[string]int{}
	listens := append(append([]Endpoint{}, s.Listen...), s.UpstreamListen...)
	for i, e := range listens {
		key := indexKey("sip.listen", i)
		if i >= len(s.Listen) {
			key = indexKey("sip.upstream_listen", i-len(s.Listen))
		}
		if err := e.check(); err != nil {
			ck.add(key, "%v", err)
			continue
		}
		if e.Transport == "tls" && !hasTLSFiles {
			ck.add(key, "a tls listener needs sip.tls.cert_file and sip.tls.key_file")
		}
		// tcp and tls both take a TCP port, so they clash with each other.
		sock := "tcp " + e.Addr()
		if e.Transport == "udp" {
			sock = "udp " + e.Addr()
		}
		if j, dup := bound[sock]; dup {
			other := indexKey("sip.listen", j)
			if j >= len(s.Listen) {
				other = indexKey("sip.upstream_listen", j-len(s.Listen))
			}
			ck.add(key, "same %s address as %s", strings.Fields(sock)[0], other)
			continue
		}
		bound[sock] = i
	}
	for _, ep := range []struct {
		key string
		e   Endpoint
	}{{"sip.upstream", s.Upstream}, {"sip.local", s.Local}} {
		if !ep.e.IsZero() {
			if err := ep.e.check(); err != nil {
				ck.add(ep.key, "%v", err)
			}
		}
	}
	bothOrNeither(ck, "sip.tls", s.TLS.CertFile, s.TLS.KeyFile)
}

func bothOrNeither(ck *checker, section, cert, key string) {
	switch {
	case cert != "" && key == "":
		ck.add(section+".key_file", "required when %s.cert_file is set (a certificate is useless without its key)", section)
	case cert == "" && key != "":
		ck.add(section+".cert_file", "required when %s.key_file is set", section)
	}
}

func (c *Config) checkPolicy(ck *checker) {
	for _, p := range c.Policy.Problems() {
		ck.add("policy."+p.Key, "%s", p.Msg)
	}
}

func (c *Config) checkMQTT(ck *checker) {
	m := &c.MQTT
	if m.StatusIntervalS < 5 || m.StatusIntervalS > 86400 {
		ck.add("mqtt.status_interval_s", "%d is not allowed (want seconds, 5 to 86400)", m.StatusIntervalS)
	}
	for i, b := range m.Brokers {
		if err := checkBroker(b); err != nil {
			ck.add(indexKey("mqtt.brokers", i), "%v", err)
		}
	}
	switch tp := m.TopicPrefix; {
	case tp == "":
		ck.add("mqtt.topic_prefix", "must not be empty (default %s)", DefaultTopicPrefix)
	case strings.ContainsAny(tp, "+#"):
		ck.add("mqtt.topic_prefix", "%s contains an MQTT wildcard ('+' or '#')", quote(tp))
	case strings.HasPrefix(tp, "/") || strings.HasSuffix(tp, "/"):
		ck.add("mqtt.topic_prefix", "%s starts or ends with '/' (the agent adds the separators, e.g. %s)", quote(tp), DefaultTopicPrefix)
	case !utf8.ValidString(tp) || strings.ContainsRune(tp, 0) || len(tp) > 1024:
		ck.add("mqtt.topic_prefix", "must be UTF-8 text without NUL, at most 1024 bytes")
	}
	bothOrNeither(ck, "mqtt.tls", m.TLS.CertFile, m.TLS.KeyFile)
}

// checkBroker takes care never to echo the URL whole: it might carry a
// password, and these messages are logged.
func checkBroker(s string) error {
	if s == "" {
		return errors.New("empty (want tcp://, ssl://, ws:// or wss:// followed by host:port)")
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("not a URL: %v", err)
	}
	switch u.Scheme {
	case "tcp", "ssl", "ws", "wss":
	case "":
		return errors.New("missing scheme (want tcp://, ssl://, ws:// or wss:// followed by host:port)")
	default:
		return fmt.Errorf("unsupported scheme %s (want tcp, ssl, ws or wss)", quote(u.Scheme))
	}
	if u.User != nil {
		return errors.New("credentials do not belong in the URL (use mqtt.username and mqtt.password_file)")
	}
	if u.Opaque != "" || u.Host == "" {
		return fmt.Errorf("missing host:port after %s://", u.Scheme)
	}
	if _, _, err := splitHostPort(u.Host); err != nil {
		return err
	}
	if (u.Path != "" && u.Scheme != "ws" && u.Scheme != "wss") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("a %s:// broker is just host:port (only ws and wss take a path)", u.Scheme)
	}
	return nil
}

func (c *Config) checkCommands(ck *checker) {
	for _, kid := range slices.Sorted(maps.Keys(c.Commands.TrustedKeys)) {
		key := childKey("commands.trusted_keys", kid)
		if !idRE.MatchString(kid) {
			ck.add(key, "bad key id %s (want 1-64 letters, digits, '.', '_' or '-')", quote(kid))
		}
		if n := len(c.Commands.TrustedKeys[kid]); n != ed25519.PublicKeySize {
			ck.add(key, "key decodes to %d bytes, want %d (an Ed25519 public key)", n, ed25519.PublicKeySize)
		}
	}
}

func (c *Config) checkAPI(ck *checker) {
	switch s := c.API.Socket; {
	case s == "" && c.DataDir == "":
		// Derived from data_dir, which has its own problem.
	case s == "":
		ck.add("api.socket", "must not be empty")
	case len(s) > sunPathMax:
		ck.add("api.socket", "path is %d bytes; a unix socket path can have at most %d (set api.socket to a shorter path)", len(s), sunPathMax)
	}
	if c.API.Listen != "" {
		if err := checkLoopback(c.API.Listen); err != nil {
			ck.add("api.listen", "%v", err)
		}
	}
}

// checkLoopback insists on loopback because the local API has no
// authentication: anyone who can reach it can read the device's state.
func checkLoopback(s string) error {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%s is not host:port (e.g. 127.0.0.1:9797)", quote(s))
	}
	if p, err := strconv.Atoi(portStr); err != nil || strings.Trim(portStr, "0123456789") != "" || checkPort(p) != nil {
		return fmt.Errorf("bad port %s (want 1-65535)", quote(portStr))
	}
	if host == "localhost" {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
		return nil
	}
	if host == "" {
		host = "all interfaces"
	}
	return fmt.Errorf("%s is not a loopback address; the local API has no authentication, so it may listen on 127.0.0.1, [::1] or localhost only", quote(host))
}
