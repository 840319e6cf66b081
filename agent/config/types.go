package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes. In YAML it is an integer (bytes) or a string
// with a unit: KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000).
type ByteSize int64

// Byte size units.
const (
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
	KB  ByteSize = 1e3
	MB  ByteSize = 1e6
	GB  ByteSize = 1e9
)

var sizeUnits = []struct {
	name string
	mult ByteSize
}{
	{"KiB", KiB}, {"MiB", MiB}, {"GiB", GiB},
	{"KB", KB}, {"MB", MB}, {"GB", GB}, {"B", 1},
}

// ParseByteSize parses "268435456", "256MiB" or "256 MiB".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	num, mult := t, ByteSize(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(t, u.name); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	bad := fmt.Errorf("bad size %s (want a number of bytes, or a whole number with KiB, MiB, GiB, KB, MB or GB, e.g. 256MiB)", quote(s))
	if num == "" || strings.Trim(num, "0123456789") != "" {
		return 0, bad
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("size %s is too large", quote(s))
	}
	return ByteSize(n) * mult, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// String gives the size in the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		mult ByteSize
	}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if b != 0 && b%u.mult == 0 {
			return strconv.FormatInt(int64(b/u.mult), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Endpoint is a SIP transport address, written transport://host:port in
// the file (udp://0.0.0.0:5060, tls://[2001:db8::1]:5061). The zero value
// means "not configured".
type Endpoint struct {
	Transport string // udp | tcp | tls
	Host      string // IP address (IPv6 without brackets) or DNS name
	Port      int
}

// ParseEndpoint parses transport://host:port. The empty string gives the
// zero Endpoint.
func ParseEndpoint(s string) (Endpoint, error) {
	if s == "" {
		return Endpoint{}, nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Endpoint{}, fmt.Errorf("%s is not transport://host:port (e.g. udp://edge.leadport.example:5060)", quote(s))
	}
	e := Endpoint{Transport: strings.ToLower(scheme)}
	if err := checkTransport(e.Transport); err != nil {
		return Endpoint{}, err
	}
	// SIP URI parts (user@, ;transport=, paths) have no meaning for a
	// socket address; refusing them beats silently dropping them.
	if strings.ContainsAny(rest, "/?#@;") {
		return Endpoint{}, fmt.Errorf("%s: only transport://host:port is allowed here (no user, path or parameters)", quote(s))
	}
	host, port, err := splitHostPort(rest)
	if err != nil {
		return Endpoint{}, err
	}
	e.Host, e.Port = host, port
	return e, nil
}

// IsZero reports whether the endpoint is unset.
func (e Endpoint) IsZero() bool { return e == Endpoint{} }

// Addr is host:port as net.Dial and net.Listen take it.
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// String gives the endpoint as written in the file; "" for the zero value.
func (e Endpoint) String() string {
	if e.IsZero() {
		return ""
	}
	return e.Transport + "://" + e.Addr()
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (e *Endpoint) UnmarshalText(text []byte) error {
	v, err := ParseEndpoint(string(text))
	if err != nil {
		return err
	}
	*e = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (e Endpoint) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// check validates an endpoint built in code the way ParseEndpoint does.
func (e Endpoint) check() error {
	if e.IsZero() {
		return errors.New("empty (want udp://, tcp:// or tls:// followed by host:port)")
	}
	if err := checkTransport(e.Transport); err != nil {
		return err
	}
	if err := checkHost(e.Host); err != nil {
		return err
	}
	return checkPort(e.Port)
}

func checkTransport(t string) error {
	switch t {
	case "udp", "tcp", "tls":
		return nil
	}
	return fmt.Errorf("unsupported scheme %s (want udp, tcp or tls)", quote(t))
}

// splitHostPort is net.SplitHostPort with messages a technician can act on
// and with host and port checked.
func splitHostPort(s string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" {
			return "", 0, fmt.Errorf("%s has no port (want host:port)", quote(s))
		}
		return "", 0, fmt.Errorf("%s is not host:port (an IPv6 address goes in brackets: [2001:db8::1]:5060)", quote(s))
	}
	if portStr == "" {
		return "", 0, fmt.Errorf("%s has no port (want host:port)", quote(s))
	}
	if strings.Trim(portStr, "0123456789") != "" {
		return "", 0, fmt.Errorf("bad port %s (want a number 1-65535)", quote(portStr))
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %s (want 1-65535)", portStr)
	}
	if err := checkHost(host); err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func checkPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("bad port %d (want 1-65535)", p)
	}
	return nil
}

// checkHost accepts an IPv4 address, an IPv6 address (unbracketed, as
// net.SplitHostPort returns it) or a DNS name.
func checkHost(h string) error {
	if h == "" {
		return errors.New("missing host (want an IP address or a name before the port)")
	}
	if strings.Contains(h, ":") {
		if a, err := netip.ParseAddr(h); err != nil || !a.Is6() {
			return fmt.Errorf("bad IPv6 address %s", quote(h))
		}
		return nil
	}
	if strings.Trim(h, "0123456789.") == "" {
		if a, err := netip.ParseAddr(h); err != nil || !a.Is4() {
			return fmt.Errorf("bad IPv4 address %s", quote(h))
		}
		return nil
	}
	name := strings.TrimSuffix(h, ".")
	if len(name) > 253 {
		return fmt.Errorf("host name %s is longer than 253 characters", quote(h))
	}
	for label := range strings.SplitSeq(name, ".") {
		if !validLabel(label) {
			return fmt.Errorf("bad host name %s (want letters, digits, '-' and '.', or an IP address)", quote(h))
		}
	}
	return nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// quote quotes a value for a message. Anything that looks like a phone
// number is masked: config errors end up in logs and support tickets, and
// the design forbids whole numbers there.
func quote(s string) string {
	const max = 48
	if looksLikePhone(s) {
		return strconv.Quote(maskPhone(s))
	}
	if r := []rune(s); len(r) > max {
		s = string(r[:max]) + "…"
	}
	return strconv.Quote(s)
}

func looksLikePhone(s string) bool {
	digits := 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case strings.ContainsRune("+ -()", c):
		default:
			return false
		}
	}
	return digits >= 7
}
