package config

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/leadport/leadport-agent/detect/policy"
)

// Config is the whole configuration file. Field comments give the YAML key;
// the example file in packaging/ documents each one.
type Config struct {
	// DeviceID names this device to the platform. Empty: the agent
	// generates one on first start and keeps it in the store.
	DeviceID string `yaml:"device_id"`
	// DataDir holds the bbolt store and, by default, the device key and
	// the API socket.
	DataDir string `yaml:"data_dir"`
	// Lines are the Leadport numbers on this device, normalised to E.164
	// by Parse.
	Lines []string `yaml:"lines"`
	// DefaultCountry is the calling code (digits, no "+") for numbers
	// written without one.
	DefaultCountry string `yaml:"default_country"`
	// MemoryBudget is the memory the agent may use: the Go runtime's soft
	// limit (GOMEMLIMIT, unless that is set) and the proxy's admission
	// control, which refuses new calls with 503 once live objects and
	// goroutine stacks fill 60 % of it (docs/sip.md, "Overload").
	MemoryBudget ByteSize `yaml:"memory_budget"`

	Store    Store    `yaml:"store"`
	SIP      SIP      `yaml:"sip"`
	Policy   Policy   `yaml:"policy"`
	MQTT     MQTT     `yaml:"mqtt"`
	Commands Commands `yaml:"commands"`
	API      API      `yaml:"api"`
	Log      Log      `yaml:"log"`
}

// Store configures the bbolt file.
type Store struct {
	MaxSize ByteSize `yaml:"max_size"`
	// KeyFile holds the device key that encrypts personal fields.
	// Default: <data_dir>/device.key.
	KeyFile string `yaml:"key_file"`
}

// SIPMode selects how the agent sees SIP.
type SIPMode string

// SIP modes. Capture is reserved: Validate rejects it until it exists.
const (
	ModeProxy   SIPMode = "proxy"
	ModeCapture SIPMode = "capture"
)

// SIP configures the signalling side.
type SIP struct {
	Mode SIPMode `yaml:"mode"`
	// Listen is where local user agents (the PBX, softphones) send SIP.
	Listen []Endpoint `yaml:"listen"`
	// Upstream is the Leadport SIP edge; zero until configured.
	Upstream Endpoint `yaml:"upstream"`
	// Local is where inbound calls go (a PBX trunk); zero: to the
	// contacts registered through the agent.
	Local Endpoint `yaml:"local"`
	// UpstreamListen is where the Leadport edge sends SIP when it must
	// reach other sockets than the local side; empty: the same sockets as
	// Listen, and the source address tells the sides apart.
	UpstreamListen []Endpoint `yaml:"upstream_listen"`
	// Advertise is the host put in Via, Record-Route and Path when a
	// listener is bound to a wildcard address; empty: the address the
	// host uses toward the upstream.
	Advertise string `yaml:"advertise"`
	// RegisterMode is how calls find phones that register through the
	// agent: "path" (RFC 3327 Path header) or "contact" (Contact rewritten
	// to the agent, for registrars without Path support).
	RegisterMode string `yaml:"register_mode"`
	// MaxCallS ends a call with no BYE after this many seconds.
	MaxCallS int `yaml:"max_call_s"`
	// TransactionLingerMS is how long the final answer to a UDP request is
	// kept to answer its retransmissions (sipproxy.SetTransactionLinger).
	TransactionLingerMS int `yaml:"transaction_linger_ms"`
	// Identity is "sign" (an RFC 8224 Identity header, signed with the
	// device's call-signing key, on every call the rules let out) or
	// "off" (for an edge that does not verify them yet).
	Identity string `yaml:"identity"`
	// TLS is the server certificate for tls:// listeners, and the CA
	// bundle that a tls:// upstream's certificate must chain to.
	TLS SIPTLS `yaml:"tls"`
}

// The values of sip.identity.
const (
	IdentitySign = "sign"
	IdentityOff  = "off"
)

// TransactionLinger is TransactionLingerMS as a duration.
func (s SIP) TransactionLinger() time.Duration {
	return time.Duration(s.TransactionLingerMS) * time.Millisecond
}

// MaxCall is MaxCallS as a duration.
func (s SIP) MaxCall() time.Duration { return time.Duration(s.MaxCallS) * time.Second }

// SIPTLS names the certificate and private key of the agent's tls://
// listeners and the CA bundle it trusts for a tls:// upstream, all PEM
// files. Without a CA bundle the system's roots are trusted.
type SIPTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
}

// Policy is the rules' settings used until the platform sends a signed
// policy: the same type, so the file and the platform's document agree.
type Policy = policy.Policy

// MQTT configures the connection to the platform.
type MQTT struct {
	// Brokers are URLs as paho takes them (tcp|ssl|ws|wss://host:port);
	// empty: no broker, records wait in the store.
	Brokers      []string `yaml:"brokers"`
	TopicPrefix  string   `yaml:"topic_prefix"`
	TLS          MQTTTLS  `yaml:"tls"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	// StatusIntervalS is how often the retained status is refreshed.
	StatusIntervalS int `yaml:"status_interval_s"`
}

// StatusInterval is StatusIntervalS as a duration.
func (m MQTT) StatusInterval() time.Duration { return time.Duration(m.StatusIntervalS) * time.Second }

// MQTTTLS names the CA bundle and the client certificate for the broker.
type MQTTTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Commands configures verification of platform commands.
type Commands struct {
	// TrustedKeys maps a key id (the "kid" of a signed command) to its
	// Ed25519 public key, decoded from base64 by Parse.
	TrustedKeys map[string]ed25519.PublicKey `yaml:"trusted_keys"`
}

// API configures the local API, status page and metrics.
type API struct {
	// Socket is the unix socket the CLI talks to. Default:
	// /run/leadport-agent/api.sock as root, <data_dir>/api.sock otherwise.
	Socket string `yaml:"socket"`
	// Listen is an optional loopback host:port for the status page and
	// metrics.
	Listen string `yaml:"listen"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Defaults that do not depend on who runs the agent.
const (
	DefaultDataDirRoot = "/var/lib/leadport-agent"
	// DefaultDataDirUser is the data directory of any other user who has no
	// home directory; with one, it is userDataDir's.
	DefaultDataDirUser = "./var/leadport"
	DefaultSocketRoot  = "/run/leadport-agent/api.sock"
	DefaultMaxSize     = 256 * MiB
	// DefaultMemoryBudget fits beside a PBX on a 512 MB appliance: with
	// 10,000 lines and two or three times its capacity offered the process
	// stays at 60-64 MiB resident, 45-47 MiB of it anonymous (docs/sip.md,
	// "Figures").
	DefaultMemoryBudget = 48 * MiB
	// GCPercent is the agent's GOGC unless the environment sets one: half
	// Go's collections, within the memory budget as the soft limit
	// (leadport-agent's tuneGC, and the drain benchmark that runs as it).
	GCPercent = 200
	// MinMemoryBudget: below it the runtime and the store's working set
	// alone fill the budget and every call would be refused.
	MinMemoryBudget    = 16 * MiB
	DefaultTopicPrefix = "leadport/v1"
)

// Package variables so tests can play root, the service user and 32-bit.
var (
	geteuid  = os.Geteuid
	intSize  = strconv.IntSize
	userName = func() string {
		if u, err := user.Current(); err == nil {
			return u.Username
		}
		return ""
	}
)

// ServiceUser is the user the packages and `leadport-agent install` run
// the agent as.
const ServiceUser = "leadport-agent"

// PackagedPath is where the packages install the configuration: run (as
// root), status, doctor and install all look there when not told otherwise.
const PackagedPath = "/etc/leadport-agent/agent.yaml"

// systemPaths: root, or the service's own user, runs the system service
// and uses the system paths; anyone else gets paths under the current
// directory, so that a trial run needs no privileges.
func systemPaths() bool { return geteuid() == 0 || userName() == ServiceUser }

// userDataDir is where a user other than root or the service user keeps
// the agent's data (and its socket) by default: the XDG state directory,
// $XDG_STATE_HOME/leadport-agent or ~/.local/state/leadport-agent, the same
// whatever directory `leadport-agent run` or `status` starts in. A user
// without a home directory (nobody) gets ./var/leadport.
func userDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "leadport-agent")
	}
	home := os.Getenv("HOME")
	if fi, err := os.Stat(home); err == nil && fi.IsDir() && filepath.IsAbs(home) && home != "/" {
		return filepath.Join(home, ".local", "state", "leadport-agent")
	}
	return DefaultDataDirUser
}

// DefaultPath returns the config file named by $LEADPORT_CONFIG, or "" when
// it is unset. The CLI's --config flag takes precedence over it.
func DefaultPath() string { return os.Getenv("LEADPORT_CONFIG") }

// Default returns the configuration used when there is no file. It depends
// on the effective user: as root (or the service user) the agent is the
// system service and uses system paths; any other user keeps everything in
// its own state directory (userDataDir), so that a trial run needs no
// privileges.
func Default() *Config {
	c := base()
	c.resolve()
	return c
}

// base holds the defaults that do not derive from other keys; resolve fills
// in the rest once the file has had its say.
func base() *Config {
	dataDir := DefaultDataDirRoot
	if !systemPaths() {
		dataDir = userDataDir()
	}
	return &Config{
		DataDir:      dataDir,
		Lines:        []string{},
		MemoryBudget: DefaultMemoryBudget,
		Store:        Store{MaxSize: DefaultMaxSize},
		SIP: SIP{
			Mode: ModeProxy,
			Listen: []Endpoint{
				{Transport: "udp", Host: "0.0.0.0", Port: 5060},
				{Transport: "tcp", Host: "0.0.0.0", Port: 5060},
			},
			UpstreamListen:      []Endpoint{},
			RegisterMode:        "path",
			MaxCallS:            4 * 3600,
			TransactionLingerMS: 100,
			Identity:            IdentitySign,
		},
		Policy:   policy.Default(),
		MQTT:     MQTT{Brokers: []string{}, TopicPrefix: DefaultTopicPrefix, StatusIntervalS: 60},
		Commands: Commands{TrustedKeys: map[string]ed25519.PublicKey{}},
		Log:      Log{Level: "info", Format: "text"},
	}
}

// resolve fills in defaults derived from other keys, so that setting
// data_dir alone moves the key file and socket along with it.
func (c *Config) resolve() {
	if c.Store.KeyFile == "" && c.DataDir != "" {
		c.Store.KeyFile = filepath.Join(c.DataDir, "device.key")
	}
	if c.API.Socket == "" {
		if systemPaths() {
			c.API.Socket = DefaultSocketRoot
		} else if c.DataDir != "" {
			c.API.Socket = filepath.Join(c.DataDir, "api.sock")
		}
	}
	if c.Lines == nil {
		c.Lines = []string{}
	}
	if c.MQTT.Brokers == nil {
		c.MQTT.Brokers = []string{}
	}
	if c.Commands.TrustedKeys == nil {
		c.Commands.TrustedKeys = map[string]ed25519.PublicKey{}
	}
}

// Load reads and parses the file at path. An empty path means no file and
// returns Default(). A file that cannot be read gives an error wrapping the
// os error (errors.Is(err, fs.ErrNotExist) works); a file with problems
// gives an *Error.
func Load(path string) (*Config, error) {
	if path == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}
