package config

import (
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/leadport/leadport-agent/detect/policy"
)

const examplePath = "../../packaging/leadport-agent.example.yaml"

// asUser runs the test as if the agent ran with effective uid euid.
func asUser(t *testing.T, euid int) {
	t.Helper()
	old, oldName := geteuid, userName
	geteuid = func() int { return euid }
	userName = func() string {
		if euid == 0 {
			return "root"
		}
		return "tech"
	}
	t.Cleanup(func() { geteuid, userName = old, oldName })
	// A user without a home, unless the test gives one.
	t.Setenv("HOME", "")
	t.Setenv("XDG_STATE_HOME", "")
}

// TestServiceUserPaths: the service's own user (not root under the
// systemd unit) gets the system paths, like root.
func TestServiceUserPaths(t *testing.T) {
	asUser(t, 998)
	userName = func() string { return ServiceUser }
	c := Default()
	if c.DataDir != DefaultDataDirRoot || c.API.Socket != DefaultSocketRoot {
		t.Errorf("as %s: data_dir %s, socket %s; want the system paths", ServiceUser, c.DataDir, c.API.Socket)
	}
}

func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	return e.Problems
}

func TestDefault(t *testing.T) {
	home := t.TempDir()
	tests := []struct {
		name                     string
		euid                     int
		env                      map[string]string
		dataDir, keyFile, socket string
	}{
		{"user without home", 1000, nil, "./var/leadport", "var/leadport/device.key", "var/leadport/api.sock"},
		{"user", 1000, map[string]string{"HOME": home},
			home + "/.local/state/leadport-agent", home + "/.local/state/leadport-agent/device.key", home + "/.local/state/leadport-agent/api.sock"},
		{"user with XDG_STATE_HOME", 1000, map[string]string{"HOME": home, "XDG_STATE_HOME": "/srv/state"},
			"/srv/state/leadport-agent", "/srv/state/leadport-agent/device.key", "/srv/state/leadport-agent/api.sock"},
		{"user with a relative XDG_STATE_HOME", 1000, map[string]string{"HOME": home, "XDG_STATE_HOME": "state"},
			home + "/.local/state/leadport-agent", home + "/.local/state/leadport-agent/device.key", home + "/.local/state/leadport-agent/api.sock"},
		{"user whose home is missing", 1000, map[string]string{"HOME": "/nonexistent"}, "./var/leadport", "var/leadport/device.key", "var/leadport/api.sock"},
		{"root", 0, map[string]string{"HOME": home}, "/var/lib/leadport-agent", "/var/lib/leadport-agent/device.key", "/run/leadport-agent/api.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asUser(t, tt.euid)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c := Default()
			if c.DataDir != tt.dataDir || c.Store.KeyFile != tt.keyFile || c.API.Socket != tt.socket {
				t.Errorf("paths = %q, %q, %q; want %q, %q, %q",
					c.DataDir, c.Store.KeyFile, c.API.Socket, tt.dataDir, tt.keyFile, tt.socket)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Default().Validate() = %v", err)
			}
			want := &Config{
				DataDir:      tt.dataDir,
				Lines:        []string{},
				MemoryBudget: 48 * MiB,
				Store:        Store{MaxSize: 256 * MiB, KeyFile: tt.keyFile},
				SIP: SIP{
					Mode: ModeProxy,
					Listen: []Endpoint{
						{Transport: "udp", Host: "0.0.0.0", Port: 5060},
						{Transport: "tcp", Host: "0.0.0.0", Port: 5060},
					},
					UpstreamListen:      []Endpoint{},
					RegisterMode:        "path",
					MaxCallS:            14400,
					TransactionLingerMS: 100,
					Identity:            "sign",
				},
				Policy:   policy.Default(),
				MQTT:     MQTT{Brokers: []string{}, TopicPrefix: "leadport/v1", StatusIntervalS: 60},
				Commands: Commands{TrustedKeys: map[string]ed25519.PublicKey{}},
				API:      API{Socket: tt.socket},
				Log:      Log{Level: "info", Format: "text"},
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("Default() =\n%+v\nwant\n%+v", c, want)
			}
		})
	}
}

func TestNoFileMeansDefaults(t *testing.T) {
	asUser(t, 1000)
	for _, in := range []string{"", "\n\n", "# only a comment\n", "---\n", "~\n", "log:\n", "sip:\n  listen:\n"} {
		c, err := Parse("agent.yaml", []byte(in))
		if err != nil {
			t.Errorf("Parse(%q) error: %v", in, err)
			continue
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("Parse(%q) = %+v, want Default()", in, c)
		}
	}
	c, err := Load("")
	if err != nil || !reflect.DeepEqual(c, Default()) {
		t.Errorf("Load(\"\") = %+v, %v; want Default(), nil", c, err)
	}
}

func TestDefaultPath(t *testing.T) {
	t.Setenv("LEADPORT_CONFIG", "")
	if got := DefaultPath(); got != "" {
		t.Errorf("DefaultPath() with no env = %q, want empty", got)
	}
	t.Setenv("LEADPORT_CONFIG", "/etc/leadport-agent/agent.yaml")
	if got := DefaultPath(); got != "/etc/leadport-agent/agent.yaml" {
		t.Errorf("DefaultPath() = %q", got)
	}
}

func TestDerivedDefaultsFollowDataDir(t *testing.T) {
	asUser(t, 1000)
	c, err := Parse("agent.yaml", []byte("data_dir: /srv/lp\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.KeyFile != "/srv/lp/device.key" || c.API.Socket != "/srv/lp/api.sock" {
		t.Errorf("key_file, socket = %q, %q; want them under /srv/lp", c.Store.KeyFile, c.API.Socket)
	}
	c, err = Parse("agent.yaml", []byte("data_dir: /srv/lp\nstore: {key_file: /etc/k}\napi: {socket: /run/s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.KeyFile != "/etc/k" || c.API.Socket != "/run/s" {
		t.Errorf("explicit key_file, socket = %q, %q; want /etc/k, /run/s", c.Store.KeyFile, c.API.Socket)
	}
}

// TestExample checks that the shipped example loads, differs from the
// defaults only where it means to, and documents every key.
func TestExample(t *testing.T) {
	for _, euid := range []int{0, 1000} {
		asUser(t, euid)
		c, err := Load(examplePath)
		if err != nil {
			t.Fatalf("euid %d: Load(example): %v", euid, err)
		}
		want := Default()
		want.DeviceID = "pbx-0042"
		want.DataDir = "/var/lib/leadport-agent"
		want.Store.KeyFile = "/var/lib/leadport-agent/device.key"
		want.Lines = []string{"+15551230001", "+15551230002"}
		want.DefaultCountry = "1"
		want.SIP.Upstream = Endpoint{Transport: "udp", Host: "edge.leadport.example", Port: 5060}
		want.SIP.Local = Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 5080}
		want.MQTT.Brokers = []string{"ssl://mqtt.leadport.example:8883"}
		want.MQTT.TLS = MQTTTLS{
			CAFile:   "/etc/leadport-agent/mqtt-ca.pem",
			CertFile: "/etc/leadport-agent/mqtt-client.pem",
			KeyFile:  "/etc/leadport-agent/mqtt-client.key",
		}
		want.MQTT.Username = "pbx-0042"
		want.MQTT.PasswordFile = "/etc/leadport-agent/mqtt.pass"
		want.API.Socket = "/run/leadport-agent/api.sock"
		want.API.Listen = "127.0.0.1:9797"
		// The keys are compared by length here; their bytes are checked
		// against the base64 in the file by the decoder tests.
		if len(c.Commands.TrustedKeys) != 2 || len(c.Commands.TrustedKeys["platform-2026"]) != 32 || len(c.Commands.TrustedKeys["platform-2027"]) != 32 {
			t.Errorf("euid %d: trusted_keys = %v, want platform-2026 and platform-2027, 32 bytes each", euid, c.Commands.TrustedKeys)
		}
		want.Commands.TrustedKeys = c.Commands.TrustedKeys
		if !reflect.DeepEqual(c, want) {
			t.Errorf("euid %d: example =\n%+v\nwant\n%+v", euid, c, want)
		}
	}

	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	_, lines, err := parse(examplePath, data)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Split(string(data), "\n")
	// A key is documented by a comment on its own line, in the block of
	// comment lines right above it, or (for the keys of a small section
	// such as sip.tls) on its parent.
	commented := func(line int) bool {
		if line < 1 || line > len(text) {
			return false
		}
		if strings.Contains(text[line-1], " #") {
			return true
		}
		return line >= 2 && strings.HasPrefix(strings.TrimSpace(text[line-2]), "#")
	}
	for _, key := range keyPaths(reflect.TypeFor[Config](), "") {
		line, ok := lines[key]
		if !ok {
			t.Errorf("example does not set %s", key)
			continue
		}
		if !commented(line) && !commented(lines[parentKey(key)]) {
			t.Errorf("example line %d: %s has no comment", line, key)
		}
	}
}

// keyPaths lists every key the schema knows, sections included.
func keyPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if tagName(f) == "-" {
			continue // not a config key (the policy's version and lines)
		}
		key := childKey(prefix, tagName(f))
		out = append(out, key)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Endpoint]() {
			out = append(out, keyPaths(f.Type, key)...)
		}
	}
	return out
}

type want struct {
	line int
	key  string
	msg  string // substring of Problem.Msg
}

func TestProblems(t *testing.T) {
	asUser(t, 1000)
	long := "/" + strings.Repeat("d", 110)
	tests := []struct {
		name string
		in   string
		want []want
	}{
		{"unknown top-level key", "device_id: a\nlins: []\n",
			[]want{{2, "lins", `unknown key (did you mean "lines"?)`}}},
		{"unknown nested key", "policy:\n  pacing:\n    cooldown: 60\n",
			[]want{{3, "policy.pacing.cooldown", `unknown key (did you mean "cooldown_s"?)`}}},
		{"unknown key lists the choices", "log:\n  colour: red\n",
			[]want{{2, "log.colour", "unknown key (want one of: level, format)"}}},
		{"int given a string", "policy:\n  pacing:\n    cooldown_s: 15m\n",
			[]want{{3, "policy.pacing.cooldown_s", `got the string "15m", want an integer`}}},
		{"int given a float", "policy: {trunking: {max_dialogs_per_line: 1.5}}\n",
			[]want{{1, "policy.trunking.max_dialogs_per_line", "got the number 1.5, want an integer"}}},
		{"int given a quoted number", "policy: {pacing: {max_attempts_per_minute: \"6\"}}\n",
			[]want{{1, "policy.pacing.max_attempts_per_minute", `got the string "6", want an integer`}}},
		{"int out of range", "policy: {pacing: {cooldown_s: 99999999999999999999}}\n",
			[]want{{1, "policy.pacing.cooldown_s", "want an integer"}}},
		{"float given a string", "policy: {pacing: {min_gap_after_call_s: soon}}\n",
			[]want{{1, "policy.pacing.min_gap_after_call_s", `got the string "soon", want a number`}}},
		{"list given a string", "sip:\n  listen: udp://0.0.0.0:5060\n",
			[]want{{2, "sip.listen", `got the string "udp://0.0.0.0:5060", want a list`}}},
		{"map given a list", "commands:\n  trusted_keys: [abc]\n",
			[]want{{2, "commands.trusted_keys", "got a list, want a mapping"}}},
		{"section given a scalar", "policy: strict\n",
			[]want{{1, "policy", `got the string "strict", want a mapping`}}},
		{"string given a mapping", "device_id: {name: x}\n",
			[]want{{1, "device_id", "got a mapping, want a string"}}},
		{"string given a list", "log:\n  level: [debug]\n",
			[]want{{2, "log.level", "got a list, want a string"}}},
		{"null list item", "lines:\n  - \"+15551230001\"\n  -\n",
			[]want{{3, "lines[1]", "got null, want a string"}}},
		{"bad log level", "log: {level: verbose}\n",
			[]want{{1, "log.level", `bad value "verbose" (want debug, info, warn or error)`}}},
		{"bad log format", "log:\n  format: xml\n",
			[]want{{2, "log.format", `bad value "xml" (want text or json)`}}},
		{"bad action", "policy:\n  forwarding:\n    action: warn\n",
			[]want{{3, "policy.forwarding.action", `bad value "warn" (want block, observe or off)`}}},
		{"capture mode", "sip:\n  mode: capture\n",
			[]want{{2, "sip.mode", "capture mode is not implemented yet"}}},
		{"bad mode", "sip:\n  mode: bridge\n",
			[]want{{2, "sip.mode", `bad mode "bridge"`}}},
		{"bad scheme", "sip:\n  listen:\n    - udp://0.0.0.0:5060\n    - htp://0.0.0.0:5060\n",
			[]want{{4, "sip.listen[1]", `unsupported scheme "htp" (want udp, tcp or tls)`}}},
		{"not a URL", "sip:\n  upstream: edge.leadport.example:5060\n",
			[]want{{2, "sip.upstream", "is not transport://host:port"}}},
		{"SIP URI parameters", "sip:\n  upstream: udp://edge.leadport.example:5060;transport=udp\n",
			[]want{{2, "sip.upstream", "only transport://host:port is allowed here"}}},
		{"port zero", "sip:\n  upstream: udp://edge.leadport.example:0\n",
			[]want{{2, "sip.upstream", "bad port 0 (want 1-65535)"}}},
		{"port too large", "sip:\n  local: tcp://127.0.0.1:65536\n",
			[]want{{2, "sip.local", "bad port 65536 (want 1-65535)"}}},
		{"port not a number", "sip:\n  local: tcp://127.0.0.1:sip\n",
			[]want{{2, "sip.local", `bad port "sip"`}}},
		{"missing port", "sip:\n  listen: [\"udp://0.0.0.0\"]\n",
			[]want{{2, "sip.listen[0]", "has no port"}}},
		{"unbracketed IPv6", "sip:\n  listen: [\"udp://::1:5060\"]\n",
			[]want{{2, "sip.listen[0]", "IPv6 address goes in brackets"}}},
		{"bad IPv4", "sip:\n  listen: [\"udp://10.0.0.300:5060\"]\n",
			[]want{{2, "sip.listen[0]", `bad IPv4 address "10.0.0.300"`}}},
		{"bad host name", "sip:\n  upstream: udp://edge_1.example:5060\n",
			[]want{{2, "sip.upstream", `bad host name "edge_1.example"`}}},
		{"empty listener", "sip:\n  listen: [\"\"]\n",
			[]want{{2, "sip.listen[0]", "empty (want udp://, tcp:// or tls://"}}},
		{"no listener", "sip:\n  listen: []\n",
			[]want{{2, "sip.listen", "proxy mode needs at least one listener"}}},
		{"same port twice", "sip:\n  listen: [\"tcp://0.0.0.0:5060\", \"tls://0.0.0.0:5060\"]\n  tls: {cert_file: c, key_file: k}\n",
			[]want{{2, "sip.listen[1]", "same tcp address as sip.listen[0]"}}},
		{"tls listener without cert", "sip:\n  listen:\n    - udp://0.0.0.0:5060\n    - tcp://0.0.0.0:5060\n    - tls://0.0.0.0:5061\n",
			[]want{{5, "sip.listen[2]", "a tls listener needs sip.tls.cert_file and sip.tls.key_file"}}},
		{"sip cert without key", "sip:\n  tls:\n    cert_file: /etc/c.pem\n",
			[]want{{2, "sip.tls.key_file", "required when sip.tls.cert_file is set"}}},
		{"mqtt key without cert", "mqtt:\n  tls:\n    ca_file: ca.pem\n    key_file: k.pem\n",
			[]want{{2, "mqtt.tls.cert_file", "required when mqtt.tls.key_file is set"}}},
		{"bad base64 key", "commands:\n  trusted_keys:\n    platform-2026: \"not base64!\"\n",
			[]want{{3, "commands.trusted_keys.platform-2026", "is not base64"}}},
		{"wrong key length", "commands:\n  trusted_keys:\n    platform-2026: AAAA\n",
			[]want{{3, "commands.trusted_keys.platform-2026", "key decodes to 3 bytes, want 32"}}},
		{"bad key id", "commands:\n  trusted_keys:\n    \"platform 2026\": CcsHNEeHC3PBxLud1qT2mbZdYSICm97wApIea7GtaJE=\n",
			[]want{{3, `commands.trusted_keys["platform 2026"]`, `bad key id "platform 2026"`}}},
		{"key given a list", "commands:\n  trusted_keys:\n    k: [1]\n",
			[]want{{3, "commands.trusted_keys.k", "got a list, want a base64 Ed25519 public key"}}},
		{"duplicate line", "default_country: \"1\"\nlines:\n  - \"+15551230001\"\n  - \"(555) 123-0001\"\n",
			[]want{{4, "lines[1]", "duplicate of lines[0] (both are +1555***0001)"}}},
		{"empty line", "lines: [\"\"]\n",
			[]want{{1, "lines[0]", `"" is not a usable phone number`}}},
		{"bad line", "lines: [\"1001\"]\n",
			[]want{{1, "lines[0]", "is not a usable phone number"}}},
		{"national line without default_country", "lines: [\"5551230001\"]\n",
			[]want{{1, "lines[0]", "national number without a default country"}}},
		{"bad default_country", "default_country: \"+1\"\nlines: [\"5551230001\"]\n",
			[]want{{1, "default_country", `bad calling code "+1"`}}},
		{"default_country with leading zero", "default_country: \"01\"\n",
			[]want{{1, "default_country", "not starting with 0"}}},
		{"bad device_id", "device_id: \"pbx 42\"\n",
			[]want{{1, "device_id", `bad device id "pbx 42"`}}},
		{"empty data_dir", "data_dir: \"\"\n",
			[]want{{1, "data_dir", "must not be empty"}}},
		{"non-loopback api.listen", "api:\n  listen: 0.0.0.0:9797\n",
			[]want{{2, "api.listen", `"0.0.0.0" is not a loopback address`}}},
		{"api.listen on all interfaces", "api:\n  listen: \":9797\"\n",
			[]want{{2, "api.listen", `"all interfaces" is not a loopback address`}}},
		{"api.listen bad port", "api:\n  listen: 127.0.0.1:0\n",
			[]want{{2, "api.listen", "bad port"}}},
		{"api.socket too long", "api:\n  socket: " + long + "\n",
			[]want{{2, "api.socket", "a unix socket path can have at most 107"}}},
		{"derived api.socket too long has no line", "data_dir: " + long + "\n",
			[]want{{0, "api.socket", "a unix socket path can have at most 107"}}},
		{"bad byte size unit", "store:\n  max_size: 256M\n",
			[]want{{2, "store.max_size", `bad size "256M"`}}},
		{"byte size too small", "store:\n  max_size: 1000\n",
			[]want{{2, "store.max_size", "1000 is too small (want at least 1MiB)"}}},
		{"memory budget too small", "lines: []\nmemory_budget: 8MiB\n",
			[]want{{2, "memory_budget", "8MiB is too small (want at least 16MiB)"}}},
		{"negative min gap", "policy: {pacing: {min_gap_after_call_s: -1}}\n",
			[]want{{1, "policy.pacing.min_gap_after_call_s", "-1 is not allowed"}}},
		{"zero cooldown", "policy: {pacing: {cooldown_s: 0}}\n",
			[]want{{1, "policy.pacing.cooldown_s", "0 is not allowed (want an integer >= 1)"}}},
		{"zero dialogs", "policy: {trunking: {max_dialogs_per_line: 0}}\n",
			[]want{{1, "policy.trunking.max_dialogs_per_line", "0 is not allowed"}}},
		{"broker bad scheme", "mqtt:\n  brokers: [\"mqtt://mqtt.leadport.example:1883\"]\n",
			[]want{{2, "mqtt.brokers[0]", `unsupported scheme "mqtt" (want tcp, ssl, ws or wss)`}}},
		{"broker with password", "mqtt:\n  brokers: [\"ssl://u:hunter2@mqtt.leadport.example:8883\"]\n",
			[]want{{2, "mqtt.brokers[0]", "credentials do not belong in the URL"}}},
		{"broker without port", "mqtt:\n  brokers: [\"ssl://mqtt.leadport.example\"]\n",
			[]want{{2, "mqtt.brokers[0]", "has no port"}}},
		{"broker with path", "mqtt:\n  brokers: [\"tcp://mqtt.leadport.example:1883/x\"]\n",
			[]want{{2, "mqtt.brokers[0]", "only ws and wss take a path"}}},
		{"topic wildcard", "mqtt:\n  topic_prefix: leadport/#\n",
			[]want{{2, "mqtt.topic_prefix", "contains an MQTT wildcard"}}},
		{"topic slash", "mqtt:\n  topic_prefix: /leadport/v1\n",
			[]want{{2, "mqtt.topic_prefix", "starts or ends with '/'"}}},
		{"topic empty", "mqtt:\n  topic_prefix: \"\"\n",
			[]want{{2, "mqtt.topic_prefix", "must not be empty"}}},
		{"duplicate key", "log:\n  level: info\n  level: debug\n",
			[]want{{3, "log.level", "duplicate key (first set at line 2)"}}},
		{"merge key", "base: &b {level: info}\nlog:\n  <<: *b\n",
			[]want{{1, "base", "unknown key"}, {3, `log["<<"]`, "merge keys (<<) are not supported"}}},
		{"alias reported where it is used", "x: &big {a: 1}\nlog:\n  level: *big\n",
			[]want{{1, "x", "unknown key"}, {3, "log.level", "got a mapping, want a string"}}},
		{"top level is a list", "- a\n- b\n",
			[]want{{1, "", "got a list, want a mapping"}}},
		{"second document", "log: {level: loud}\n---\nlog: {level: debug}\n",
			[]want{{1, "log.level", `bad value "loud"`}, {2, "", "a second YAML document"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("agent.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v; want %d problem(s)", c, len(tt.want))
			}
			if c != nil {
				t.Errorf("Parse returned a config along with an error")
			}
			checkProblems(t, problemsOf(t, err), tt.want)
		})
	}
}

func checkProblems(t *testing.T, got []Problem, want []want) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(got), len(want), (&Error{got}).Error())
		return
	}
	for i, w := range want {
		g := got[i]
		if g.File != "agent.yaml" || g.Line != w.line || g.Key != w.key || !strings.Contains(g.Msg, w.msg) {
			t.Errorf("problem %d = %s\nwant agent.yaml:%d: %s: ...%s...", i, g, w.line, w.key, w.msg)
		}
	}
}

func Test32BitMaxSize(t *testing.T) {
	old := intSize
	t.Cleanup(func() { intSize = old })
	in := []byte("store:\n  max_size: 2GiB\n")

	intSize = 64
	if c, err := Parse("agent.yaml", in); err != nil || c.Store.MaxSize != 2*GiB {
		t.Errorf("64-bit: Parse = %v, %v; want 2GiB", c, err)
	}
	intSize = 32
	_, err := Parse("agent.yaml", in)
	checkProblems(t, problemsOf(t, err), []want{{2, "store.max_size", "2GiB is too large for a 32-bit build (at most 1GiB"}})
	if _, err := Parse("agent.yaml", []byte("store: {max_size: 1GiB}\n")); err != nil {
		t.Errorf("32-bit: 1GiB rejected: %v", err)
	}
}

// TestAllProblemsAtOnce checks that one bad value does not hide the next,
// and the exact text a technician sees.
func TestAllProblemsAtOnce(t *testing.T) {
	asUser(t, 1000)
	in := `device_id: pbx-0042
lines: ["+15551230001", "+15551230001"]
sip:
  listen: ["udp://0.0.0.0:5060", "htp://0.0.0.0:5060", "tls://0.0.0.0:5061"]
  upstream: udp://edge.leadport.example:99999
policy:
  pacing:
    cooldown_s: 15m
    burst: 3
commands:
  trusted_keys:
    platform-2026: AAAA
api: {listen: "192.0.2.1:9797"}
log: {level: loud}
`
	_, err := Parse("agent.yaml", []byte(in))
	want := `agent.yaml:2: lines[1]: duplicate of lines[0] (both are +1555***0001)
agent.yaml:4: sip.listen[1]: unsupported scheme "htp" (want udp, tcp or tls)
agent.yaml:4: sip.listen[2]: a tls listener needs sip.tls.cert_file and sip.tls.key_file
agent.yaml:5: sip.upstream: bad port 99999 (want 1-65535)
agent.yaml:8: policy.pacing.cooldown_s: got the string "15m", want an integer
agent.yaml:9: policy.pacing.burst: unknown key (want one of: action, max_attempts_per_minute, max_attempts_per_hour, recent_attempts, min_gap_after_call_s, short_gaps, same_ring_timeouts, ring_tolerance_ms, max_parallel, regular_cv, regular_over, tick_tolerance_ms, sequential_step, sequential_run, cooldown_s, sequential_wide_step, sequential_wide_run, suspect_sequential_wide_run, conversation_s, busy_hour_attempts, conversations, min_gap_after_conversation_s, fast_after_conversation, suspect_fast_after_conversation, answered_window, short_hangups, suspect_short_hangups, hangup_spike, suspect_hangup_spike, invalid_window, invalid_numbers, suspect_invalid_numbers, pause_s, sustained_attempts, suspect_sustained_attempts, suspect_same_ring_timeouts, suspect_sequential_run, suspect_interval_s)
agent.yaml:12: commands.trusted_keys.platform-2026: key decodes to 3 bytes, want 32 (an Ed25519 public key)
agent.yaml:13: api.listen: "192.0.2.1" is not a loopback address; the local API has no authentication, so it may listen on 127.0.0.1, [::1] or localhost only
agent.yaml:14: log.level: bad value "loud" (want debug, info, warn or error)`
	if err == nil || err.Error() != want {
		t.Errorf("Parse error =\n%v\nwant\n%s", err, want)
	}
}

func TestSyntaxError(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line int
	}{
		{"unclosed flow list", "log:\n  level: info\nsip:\n  listen: [udp://0.0.0.0:5060\n", 4},
		{"unclosed flow list before more keys", "a: 1\nb: [1, 2\nc: 3\n", 2},
		{"list item in a mapping", "log: {}\n- b\n", 2},
		{"error on the first line", "log: level: info\n", 1},
		{"parser error on the first line", ": : :\n", 1},
		{"unterminated quote", "device_id: \"pbx\nlog: {}\n", 3},
		{"control character", "log: {}\ndevice_id: a\x01\n", 2},
		{"invalid UTF-8", "log: {}\n\ndevice_id: \xff\n", 3},
		{"unknown anchor", "log: {}\nsip: *nope\n", 2},
		{"bad indentation", "sip:\n  mode: proxy\n   listen: []\n", 3},
		{"tab indentation", "log:\n\tlevel: info\n", 2},
		{"syntax error in a second document", "log: {}\n---\n: : :\n  - [\n", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("agent.yaml", []byte(tt.in))
			ps := problemsOf(t, err)
			if len(ps) != 1 {
				t.Fatalf("got %d problems, want 1: %v", len(ps), err)
			}
			p := ps[0]
			if p.Line != tt.line || p.Key != "" || !strings.HasPrefix(p.Msg, "YAML syntax: ") {
				t.Errorf("problem = %#v, want line %d, no key, a YAML syntax message", p, tt.line)
			}
			if !strings.HasPrefix(err.Error(), "agent.yaml:") {
				t.Errorf("Error() = %q, want it to start with agent.yaml:", err)
			}
		})
	}
}

func TestPhoneNumbersAreMasked(t *testing.T) {
	for _, in := range []string{
		"lines: [\"+1555123000199999\"]\n",                          // too long
		"lines: [\"+1 555 123 0001 ext 7\"]\n",                      // letters
		"lines: [\"+15551230001\", \"+15551230001\"]\n",             // duplicate
		"device_id: \"+15551230001\"\nlog: {level: +15551230001}\n", // echoed as a bad value
	} {
		_, err := Parse("agent.yaml", []byte(in))
		if err == nil {
			t.Errorf("Parse(%q) succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), "5551230001") || strings.Contains(err.Error(), "1230001") {
			t.Errorf("Parse(%q) error shows the whole number:\n%v", in, err)
		}
	}
}

func TestAcceptedForms(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(*Config) bool
	}{
		{"unquoted number and int calling code", "default_country: 1\nlines: [+15551230001, 5551230002]\n", func(c *Config) bool {
			return c.DefaultCountry == "1" && reflect.DeepEqual(c.Lines, []string{"+15551230001", "+15551230002"})
		}},
		{"byte size as an integer", "store: {max_size: 2097152}\n", func(c *Config) bool { return c.Store.MaxSize == 2*MiB }},
		{"byte size in decimal units", "store: {max_size: 10 MB}\n", func(c *Config) bool { return c.Store.MaxSize == 10*MB }},
		{"float min gap", "policy: {pacing: {min_gap_after_call_s: 1.5}}\n", func(c *Config) bool {
			return c.Policy.Pacing.MinGapAfterCallS == 1.5
		}},
		{"int min gap zero", "policy: {pacing: {min_gap_after_call_s: 0}}\n", func(c *Config) bool { return c.Policy.Pacing.MinGapAfterCallS == 0 }},
		{"IPv6 and names", "sip:\n  listen: [\"udp://[::]:5060\", \"TCP://pbx.local:5060\"]\n  tls: {cert_file: c, key_file: k}\n", func(c *Config) bool {
			return c.SIP.Listen[0].Addr() == "[::]:5060" && c.SIP.Listen[1].String() == "tcp://pbx.local:5060"
		}},
		{"tls listener with cert", "sip:\n  listen: [\"tls://0.0.0.0:5061\"]\n  tls: {cert_file: c, key_file: k}\n", func(c *Config) bool {
			return c.SIP.Listen[0].Transport == "tls"
		}},
		{"tls upstream with its CA", "sip:\n  upstream: \"tls://edge.example:5061\"\n  tls: {ca_file: /etc/leadport-agent/edge-ca.pem}\n", func(c *Config) bool {
			return c.SIP.Upstream.Transport == "tls" && c.SIP.TLS.CAFile == "/etc/leadport-agent/edge-ca.pem"
		}},
		{"lists replace the default", "sip: {listen: [\"udp://127.0.0.1:5070\"]}\n", func(c *Config) bool { return len(c.SIP.Listen) == 1 }},
		{"raw URL base64 key", "commands: {trusted_keys: {k.1: gIZhFipXSeny0DMs71JfNuFUYoXcPs_ECFzpPnGelGA}}\n", func(c *Config) bool {
			k := c.Commands.TrustedKeys["k.1"]
			return len(k) == 32 && k[0] == 0x80 && k[31] == 0x60
		}},
		{"ws broker with path", "mqtt: {brokers: [\"wss://mqtt.leadport.example:443/mqtt\"]}\n", func(c *Config) bool { return len(c.MQTT.Brokers) == 1 }},
		{"localhost and IPv6 loopback", "api: {listen: \"[::1]:9797\"}\n", func(c *Config) bool { return c.API.Listen == "[::1]:9797" }},
		{"anchors", "a: &x debug\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("agent.yaml", []byte(tt.in))
			if tt.check == nil {
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !tt.check(c) {
				t.Errorf("Parse(%q) = %+v", tt.in, c)
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr bool
	}{
		{"1048576", MiB, false},
		{"256MiB", 256 * MiB, false},
		{"256 MiB", 256 * MiB, false},
		{"1GiB", GiB, false},
		{"4KiB", 4 * KiB, false},
		{"5KB", 5000, false},
		{"5MB", 5_000_000, false},
		{"2GB", 2_000_000_000, false},
		{"12B", 12, false},
		{"256M", 0, true},
		{"256mib", 0, true},
		{"1.5GiB", 0, true},
		{"-1", 0, true},
		{"", 0, true},
		{"MiB", 0, true},
		{"99999999999GiB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	for in, want := range map[ByteSize]string{256 * MiB: "256MiB", GiB: "1GiB", 1536: "1536", 3 * KiB: "3KiB", 0: "0"} {
		if got := in.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(in), got, want)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in      string
		want    Endpoint
		wantErr string
	}{
		{"", Endpoint{}, ""},
		{"udp://0.0.0.0:5060", Endpoint{"udp", "0.0.0.0", 5060}, ""},
		{"tls://[2001:db8::1]:5061", Endpoint{"tls", "2001:db8::1", 5061}, ""},
		{"tcp://edge.leadport.example.:5060", Endpoint{"tcp", "edge.leadport.example.", 5060}, ""},
		{"sip:edge.leadport.example", Endpoint{}, "is not transport://host:port"},
		{"ws://h:1", Endpoint{}, `unsupported scheme "ws"`},
		{"udp://h:1/", Endpoint{}, "only transport://host:port"},
		{"udp://:5060", Endpoint{}, "missing host"},
		{"udp://h:", Endpoint{}, "has no port"},
		{"udp://h:+5", Endpoint{}, "bad port"},
		{"udp://-h:5", Endpoint{}, "bad host name"},
		{"udp://[::g]:5", Endpoint{}, "bad IPv6 address"},
	}
	for _, tt := range tests {
		got, err := ParseEndpoint(tt.in)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) || got != tt.want {
			t.Errorf("ParseEndpoint(%q) = %+v, %v; want %+v, error containing %q", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil && got.String() != strings.ToLower(tt.in) {
			t.Errorf("ParseEndpoint(%q).String() = %q", tt.in, got.String())
		}
	}
}

func TestLoad(t *testing.T) {
	asUser(t, 1000)
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte("log:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].File != path || ps[0].Line != 2 {
		t.Errorf("Load problems = %v, want one at %s:2", ps, path)
	}
}

// TestValidateInCode covers a Config changed by the program rather than
// read from a file: no file or line, just the key.
func TestValidateInCode(t *testing.T) {
	asUser(t, 1000)
	c := Default()
	c.SIP.Listen = append(c.SIP.Listen, Endpoint{Transport: "sctp", Host: "0.0.0.0", Port: 5060}, Endpoint{})
	c.Lines = []string{"5551230001"}
	c.DefaultCountry = "1"
	c.Commands.TrustedKeys["k"] = make(ed25519.PublicKey, 31)
	c.Policy.Trunking.Action = "maybe"
	err := c.Validate()
	want := `lines[0]: 555***0001 is not normalised (want +1555***0001)
sip.listen[2]: unsupported scheme "sctp" (want udp, tcp or tls)
sip.listen[3]: empty (want udp://, tcp:// or tls:// followed by host:port)
policy.trunking.action: bad value "maybe" (want block, observe or off)
commands.trusted_keys.k: key decodes to 31 bytes, want 32 (an Ed25519 public key)`
	if err == nil || err.Error() != want {
		t.Errorf("Validate() =\n%v\nwant\n%s", err, want)
	}
}

func TestParentKey(t *testing.T) {
	for in, want := range map[string]string{
		"log":                             "",
		"log.level":                       "log",
		"sip.listen[1]":                   "sip.listen",
		"commands.trusted_keys.k":         "commands.trusted_keys",
		`commands.trusted_keys["a.b[1]"]`: "commands.trusted_keys",
		`["x y"]`:                         "",
	} {
		if got := parentKey(in); got != want {
			t.Errorf("parentKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	// Small seeds on purpose: the fuzzer minimises every new input, and
	// minimising the commented example file takes most of a short run.
	f.Add([]byte(`device_id: pbx-0042
data_dir: /var/lib/leadport-agent
lines: ["+15551230001", "(555) 123-0002"]
default_country: "1"
store: {max_size: 256MiB, key_file: ""}
sip:
  mode: proxy
  listen: ["udp://0.0.0.0:5060", "tls://[::]:5061"]
  upstream: udp://edge.leadport.example:5060
  local: udp://127.0.0.1:5080
  tls: {cert_file: c.pem, key_file: k.pem}
policy:
  forwarding: {action: block}
  pacing: {action: observe, max_attempts_per_minute: 6, min_gap_after_call_s: 2.5, cooldown_s: 900}
  trunking: {action: off, max_dialogs_per_line: 1, max_contacts_per_line: 1}
mqtt:
  brokers: ["ssl://mqtt.leadport.example:8883", "wss://m.example:443/mqtt"]
  topic_prefix: leadport/v1
  tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}
  username: pbx-0042
  password_file: /etc/leadport-agent/mqtt.pass
commands:
  trusted_keys: {platform-2026: CcsHNEeHC3PBxLud1qT2mbZdYSICm97wApIea7GtaJE=}
api: {socket: /run/leadport-agent/api.sock, listen: "127.0.0.1:9797"}
log: {level: info, format: text}
`))
	f.Add([]byte(""))
	f.Add([]byte("sip:\n  listen: [\"udp://0.0.0.0:5060\", \"htp://x:0\"]\n"))
	f.Add([]byte("lines: [+15551230001, \"(555) 123-0001\"]\ndefault_country: 1\n"))
	f.Add([]byte("commands: {trusted_keys: {k: AAAA, \"a b\": [1]}}\nstore: {max_size: 1GiB}\n"))
	f.Add([]byte("a: &x {level: info}\nlog: *x\nlog:\n  <<: *x\n---\n"))
	f.Add([]byte("policy: {pacing: {min_gap_after_call_s: .nan, cooldown_s: 0x10}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("error %v (%T) is not a *Error with problems", err, err)
			}
			for _, p := range e.Problems {
				if p.Msg == "" || p.File != "fuzz.yaml" {
					t.Fatalf("incomplete problem %#v", p)
				}
			}
			_ = err.Error()
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
	})
}
