package doctor

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect/passport"
	"github.com/leadport/leadport-agent/internal/testcert"
	"github.com/leadport/leadport-agent/internal/testport"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// doctorEnv is one installation under test: a config built from its
// fields (or raw), in real temp directories.
type doctorEnv struct {
	t        *testing.T
	deviceID string
	dataDir  string
	socket   string
	listen   []string
	upstream string
	brokers  []string
	mqttTLS  map[string]string // ca_file, cert_file, key_file
	keys     map[string]string // commands.trusted_keys
	raw      string            // when set, the whole config file
	path     string            // the config file, once written
	want     []string          // regexps the output must match, added by a case
	after    func(out string)  // more assertions after the run
}

func newDoctorEnv(t *testing.T) *doctorEnv {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	// A unix socket path must stay under 108 bytes; t.TempDir()'s names
	// grow with the test's name.
	sockDir, err := os.MkdirTemp("", "lpd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(testport.Free(t))
	return &doctorEnv{
		t:        t,
		deviceID: "pbx-test",
		dataDir:  data,
		socket:   filepath.Join(sockDir, "api.sock"),
		listen:   []string{"udp://127.0.0.1:" + port, "tcp://127.0.0.1:" + port},
		keys:     map[string]string{"platform-test": base64.StdEncoding.EncodeToString(pub)},
	}
}

func (e *doctorEnv) writeConfig() string {
	e.t.Helper()
	text := e.raw
	if text == "" {
		var b strings.Builder
		if e.deviceID != "" {
			fmt.Fprintf(&b, "device_id: %s\n", e.deviceID)
		}
		fmt.Fprintf(&b, "data_dir: %q\n", e.dataDir)
		b.WriteString("sip:\n  listen:\n")
		for _, l := range e.listen {
			fmt.Fprintf(&b, "    - %q\n", l)
		}
		if e.upstream != "" {
			fmt.Fprintf(&b, "  upstream: %q\n", e.upstream)
		}
		b.WriteString("mqtt:\n  brokers:\n")
		for _, u := range e.brokers {
			fmt.Fprintf(&b, "    - %q\n", u)
		}
		if len(e.mqttTLS) > 0 {
			b.WriteString("  tls:\n")
			for k, v := range e.mqttTLS {
				fmt.Fprintf(&b, "    %s: %q\n", k, v)
			}
		}
		b.WriteString("commands:\n  trusted_keys:")
		if len(e.keys) == 0 {
			b.WriteString(" {}\n")
		} else {
			b.WriteString("\n")
			for k, v := range e.keys {
				fmt.Fprintf(&b, "    %s: %q\n", k, v)
			}
		}
		fmt.Fprintf(&b, "api:\n  socket: %q\n", e.socket)
		text = b.String()
	}
	e.path = filepath.Join(e.t.TempDir(), "agent.yaml")
	if err := os.WriteFile(e.path, []byte(text), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return e.path
}

// runDoctor checks the installation whose config is at path, as
// `leadport-agent doctor --config path` does, and returns the exit code the
// command has (1 when a check failed) and the text report, followed by the
// report's error, if any.
func runDoctor(t *testing.T, path string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	rep := Run(context.Background(), Options{Config: path, Begin: func(r *Report) { r.WriteHeader(&out) }, serviceUser: noServiceUser})
	rep.WriteChecks(&out)
	if err := rep.Err(); err != nil {
		fmt.Fprintln(&out, err)
	}
	return exitCode(rep), out.String()
}

// noServiceUser stands in for the service user in the doctor's tests: a
// user no host has, so that the checks judge ownership against whoever runs
// the tests even while package service's tests install the real one.
// TestDoctorServiceUserOwnership covers a service user.
const noServiceUser = "leadport-doctor-test-no-such-user"

// exitCode is the command's exit code for rep: 1 when a check failed.
func exitCode(rep *Report) int {
	if rep.Err() != nil {
		return 1
	}
	return 0
}

var doctorQuietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// doctorSIPEdge is a SIP user agent that answers OPTIONS with 200, over
// transport (udp or tcp) on loopback; it counts what it answered.
// doctorSIPServer is a quiet SIP user agent and server on loopback, named
// name; the caller closes the user agent.
func doctorSIPServer(t *testing.T, name string) (*sipgo.UserAgent, *sipgo.Server) {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(name), sipgo.WithUserAgentHostname("127.0.0.1"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(doctorQuietLog)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(doctorQuietLog)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(doctorQuietLog))
	if err != nil {
		t.Fatal(err)
	}
	return ua, srv
}

// doctorSIPEdge answers OPTIONS; with a skew, its answers carry a Date
// that far from this host's clock.
func doctorSIPEdge(t *testing.T, transport string, skew ...time.Duration) (addr string, answered *atomic.Int32) {
	t.Helper()
	ua, srv := doctorSIPServer(t, "edge")
	answered = new(atomic.Int32)
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		answered.Add(1)
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		if len(skew) > 0 {
			res.AppendHeader(sip.NewHeader("Date", time.Now().Add(skew[0]).UTC().Format(http.TimeFormat)))
		}
		tx.Respond(res)
	})
	var closer io.Closer
	if transport == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.ServeUDP(c)
		addr, closer = c.LocalAddr().String(), c
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.ServeTCP(l)
		addr, closer = l.Addr().String(), l
	}
	t.Cleanup(func() {
		closer.Close()
		ua.Close()
	})
	return addr, answered
}

// doctorSilentEdge takes UDP and never answers; it counts the datagrams.
func doctorSilentEdge(t *testing.T) (addr string, got *atomic.Int32) {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	got = new(atomic.Int32)
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	return c.LocalAddr().String(), got
}

// doctorServeAPI answers GET /v1/status with 200 on the unix socket, as the
// running agent's local API does.
func doctorServeAPI(t *testing.T, sock string) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"state":"online","device_id":"pbx-generated-7"}`))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// doctorCert is a self-signed certificate for 127.0.0.1 (its own CA),
// valid from notBefore to notAfter, written as PEM files.
type doctorCert struct {
	certFile, keyFile string
	pair              tls.Certificate
}

func doctorMakeCert(t *testing.T, cn string, notBefore, notAfter time.Time) doctorCert {
	t.Helper()
	c := testcert.New(t, cn, notBefore, notAfter)
	certFile, keyFile := c.Write(t, t.TempDir(), cn)
	return doctorCert{certFile: certFile, keyFile: keyFile, pair: c.Pair}
}

// doctorClientIDs is a broker hook that notes every client id that connects.
type doctorClientIDs struct {
	mochi.HookBase
	mu  gosync.Mutex
	ids []string
}

func (h *doctorClientIDs) ID() string           { return "client-ids" }
func (h *doctorClientIDs) Provides(b byte) bool { return b == mochi.OnConnect }
func (h *doctorClientIDs) OnConnect(cl *mochi.Client, _ packets.Packet) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ids = append(h.ids, cl.ID)
	return nil
}

func (h *doctorClientIDs) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ids)
}

// doctorTLSBroker is a mochi broker on loopback behind TLS with cert.
func doctorTLSBroker(t *testing.T, cert doctorCert) (url string, ids *doctorClientIDs) {
	t.Helper()
	addr := synctest.FreeAddr(t)
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: doctorQuietLog})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ids = &doctorClientIDs{}
	if err := srv.AddHook(ids, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: addr,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert.pair}, MinVersion: tls.VersionTLS12}})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return "ssl://" + addr, ids
}

func TestDoctor(t *testing.T) {
	day := 24 * time.Hour
	now := time.Now()
	tests := []struct {
		name     string
		setup    func(t *testing.T, e *doctorEnv)
		wantCode int
		want     []string // regexps, multi-line mode
		notWant  []string
	}{
		{
			name:     "fresh install passes with warnings for what is not configured yet",
			setup:    func(t *testing.T, e *doctorEnv) {},
			wantCode: 0,
			want: []string{
				`(?m)^OK    config        .*agent\.yaml: valid$`,
				`(?m)^OK    data dir      .*/data: writable, mode 0700`,
				`(?m)^OK    device key    .*/data/device\.key not created yet`,
				`(?m)^OK    trusted keys  1 key: platform-test$`,
				`(?m)^OK    sip listen    udp://127\.0\.0\.1:\d+: free$`,
				`(?m)^OK    sip listen    tcp://127\.0\.0\.1:\d+: free$`,
				`(?m)^WARN  upstream      sip\.upstream is not set`,
				`(?m)^WARN  broker        .*records wait in the store`,
				`(?m)^OK    clock `,
				`(?m)^\d+ WARN, \d+ OK$`,
			},
			notWant: []string{`(?m)^FAIL`},
		},
		{
			name: "invalid config fails, names each problem and skips the rest",
			setup: func(t *testing.T, e *doctorEnv) {
				e.raw = "data_dir: " + e.dataDir + "\nsip:\n  mode: telepathy\nfrobnicate: 1\n"
			},
			wantCode: 1,
			want: []string{
				`(?m)^FAIL  config        .*agent\.yaml: 2 problems$`,
				`(?m)^ {20}line 3: sip\.mode: bad mode "telepathy"`,
				`(?m)^ {20}line 4: frobnicate: unknown key`,
				`(?m)^ {20}fix: correct the file`,
				`(?m)^SKIP  data dir      needs a valid config$`,
				`(?m)^SKIP  broker        needs a valid config$`,
				`(?m)^1 check failed$`, // the command prints it after "leadport-agent doctor: "
			},
		},
		{
			name: "missing config file fails",
			setup: func(t *testing.T, e *doctorEnv) {
				e.path = filepath.Join(t.TempDir(), "nope.yaml")
			},
			wantCode: 1,
			want:     []string{`(?m)^FAIL  config        cannot read .*nope\.yaml: no such file or directory$`},
		},
		{
			name: "device key readable by others fails with a chmod fix",
			setup: func(t *testing.T, e *doctorEnv) {
				key := filepath.Join(e.dataDir, "device.key")
				doctorWriteMode(t, key, make([]byte, 32), 0o644)
				e.want = append(e.want, `(?m)^ {20}fix: chmod 600 `+regexp.QuoteMeta(key)+`$`)
			},
			wantCode: 1,
			want:     []string{`(?m)^FAIL  device key    .*device\.key: mode 0644, want 0600`},
		},
		{
			name: "device key 0600 passes",
			setup: func(t *testing.T, e *doctorEnv) {
				doctorWriteMode(t, filepath.Join(e.dataDir, "device.key"), make([]byte, 32), 0o600)
			},
			wantCode: 0,
			want:     []string{`(?m)^OK    device key    .*device\.key: mode 0600`},
		},
		{
			name: "device key of the wrong size fails",
			setup: func(t *testing.T, e *doctorEnv) {
				doctorWriteMode(t, filepath.Join(e.dataDir, "device.key"), []byte("short"), 0o600)
			},
			wantCode: 1,
			want:     []string{`(?m)^FAIL  device key    .*5 bytes, want 32: not a device key`},
		},
		{
			name: "device key missing beside an existing store fails",
			setup: func(t *testing.T, e *doctorEnv) {
				doctorWriteMode(t, filepath.Join(e.dataDir, store.FileName), []byte("x"), 0o600)
			},
			wantCode: 1,
			want: []string{
				`(?m)^FAIL  device key    .*device\.key is missing, but the store .*agent\.db exists`,
				`(?m)^ {20}fix: restore .*device\.key from a backup`,
			},
		},
		{
			name: "world-writable data directory fails",
			setup: func(t *testing.T, e *doctorEnv) {
				doctorChmod(t, e.dataDir, 0o777)
				e.want = append(e.want, `(?m)^ {20}fix: chmod 750 `+regexp.QuoteMeta(e.dataDir)+`$`)
			},
			wantCode: 1,
			want:     []string{`(?m)^FAIL  data dir      .*/data: mode 0777: every user on this host can change the store`},
		},
		{
			name: "world-readable data directory warns",
			setup: func(t *testing.T, e *doctorEnv) {
				doctorChmod(t, e.dataDir, 0o755)
				e.want = append(e.want, `(?m)^ {20}fix: chmod 750 `+regexp.QuoteMeta(e.dataDir)+`$`)
			},
			wantCode: 0,
			want:     []string{`(?m)^WARN  data dir      .*/data: mode 0755: every user on this host can look into it`},
		},
		{
			name: "data directory not created yet passes",
			setup: func(t *testing.T, e *doctorEnv) {
				e.dataDir = filepath.Join(e.dataDir, "later")
			},
			wantCode: 0,
			want:     []string{`(?m)^OK    data dir      .*/later does not exist yet: the agent creates it at first start`},
		},
		{
			name: "SIP port held by another program fails",
			setup: func(t *testing.T, e *doctorEnv) {
				c, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				e.listen = []string{"udp://" + c.LocalAddr().String()}
				e.want = append(e.want, `(?m)^FAIL  sip listen    udp://`+regexp.QuoteMeta(c.LocalAddr().String())+`: port in use by another program`)
				if runtime.GOOS == "linux" && os.Geteuid() == 0 {
					// This test process holds it, and root can see that.
					e.want = append(e.want, fmt.Sprintf(`: port in use by another program: doctor\.test \(pid %d\)`, os.Getpid()))
				}
			},
			wantCode: 1,
			want:     []string{`(?m)^ {20}fix: stop that program or move it off UDP port \d+`},
		},
		{
			name: "SIP port held while the agent's API answers is the agent's",
			setup: func(t *testing.T, e *doctorEnv) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				doctorServeAPI(t, e.socket)
				e.listen = []string{"tcp://" + l.Addr().String()}
				e.want = append(e.want, `(?m)^OK    sip listen    tcp://`+regexp.QuoteMeta(l.Addr().String())+`: held by the running agent`)
			},
			wantCode: 0,
		},
		{
			name: "upstream answering OPTIONS over UDP passes",
			setup: func(t *testing.T, e *doctorEnv) {
				addr, answered := doctorSIPEdge(t, "udp")
				e.upstream = "udp://" + addr
				e.want = append(e.want, `(?m)^OK    upstream      udp://`+regexp.QuoteMeta(addr)+`: answered 200 OK in [0-9.]+ ms$`)
				e.after = func(string) {
					if answered.Load() == 0 {
						t.Error("the edge answered no OPTIONS")
					}
				}
			},
			wantCode: 0,
		},
		{
			name: "upstream answering OPTIONS over TCP passes",
			setup: func(t *testing.T, e *doctorEnv) {
				addr, _ := doctorSIPEdge(t, "tcp")
				e.upstream = "tcp://" + addr
				e.want = append(e.want, `(?m)^OK    upstream      tcp://`+regexp.QuoteMeta(addr)+`: answered 200 OK`)
			},
			wantCode: 0,
		},
		{
			name: "a UDP-only edge warns about large INVITEs; its clock in step passes",
			setup: func(t *testing.T, e *doctorEnv) {
				addr, _ := doctorSIPEdge(t, "udp", 0)
				e.upstream = "udp://" + addr
			},
			wantCode: 0,
			want: []string{
				`(?m)^WARN  invite size   the edge answers only UDP on udp://127\.0\.0\.1:\d+: INVITEs with an Identity`,
				`(?m)^ {20}fix: ask Leadport for the edge's TCP or TLS address`,
				`(?m)^OK    edge clock    this host is [01]\.\d s (behind|ahead of) the edge`,
			},
		},
		{
			name: "a TCP edge takes large INVITEs whole",
			setup: func(t *testing.T, e *doctorEnv) {
				addr, _ := doctorSIPEdge(t, "tcp")
				e.upstream = "tcp://" + addr
			},
			wantCode: 0,
			want:     []string{`(?m)^OK    invite size   the upstream is tcp: signed INVITEs of any size go whole$`},
			notWant:  []string{`edge clock`}, // this edge sends no Date
		},
		{
			name: "an edge clock 30 s off warns",
			setup: func(t *testing.T, e *doctorEnv) {
				addr, _ := doctorSIPEdge(t, "udp", 30*time.Second)
				e.upstream = "udp://" + addr
			},
			wantCode: 0,
			want: []string{
				`(?m)^WARN  edge clock    this host is (29|30|31)\.\d s behind the edge`,
				`(?m)^ {20}fix: enable NTP`,
			},
		},
		{
			name: "an edge clock 2 minutes off fails",
			setup: func(t *testing.T, e *doctorEnv) {
				addr, _ := doctorSIPEdge(t, "udp", -2*time.Minute)
				e.upstream = "udp://" + addr
			},
			wantCode: 1,
			want:     []string{`(?m)^FAIL  edge clock    this host is 1\d\d\.\d s ahead of the edge`},
		},
		{
			name: "a call-signing key readable by others fails with a chmod fix",
			setup: func(t *testing.T, e *doctorEnv) {
				k, _, err := passport.LoadOrCreateKey(filepath.Join(e.dataDir, "identity.key"))
				if err != nil {
					t.Fatal(err)
				}
				os.Chmod(k.Path(), 0o640)
				e.want = append(e.want, `(?m)^ {20}fix: chmod 600 `+regexp.QuoteMeta(k.Path())+`$`)
			},
			wantCode: 1,
			want:     []string{`(?m)^FAIL  identity key  .*identity\.key has mode 0640, want 0600`},
		},
		{
			name: "a call-signing key passes and is named by its thumbprint",
			setup: func(t *testing.T, e *doctorEnv) {
				k, _, err := passport.LoadOrCreateKey(filepath.Join(e.dataDir, "identity.key"))
				if err != nil {
					t.Fatal(err)
				}
				e.want = append(e.want, `(?m)^OK    identity key  .*identity\.key: ES256 key `+regexp.QuoteMeta(passport.Thumbprint(k.PublicKey()))+`, created \d{4}-\d\d-\d\d$`)
			},
			wantCode: 0,
		},
		{
			name: "a call-signing key that is not a key fails",
			setup: func(t *testing.T, e *doctorEnv) {
				doctorWriteMode(t, filepath.Join(e.dataDir, "identity.key"), []byte("not a key"), 0o600)
			},
			wantCode: 1,
			want: []string{
				`(?m)^FAIL  identity key  `,
				`(?m)^ {20}fix: move .*identity\.key aside: the agent makes a new key`,
			},
		},
		{
			name: "silent upstream fails with a firewall hint",
			setup: func(t *testing.T, e *doctorEnv) {
				addr, got := doctorSilentEdge(t)
				e.upstream = "udp://" + addr
				e.after = func(string) {
					if got.Load() == 0 {
						t.Error("the doctor sent the upstream nothing")
					}
				}
			},
			wantCode: 1,
			want: []string{
				`(?m)^FAIL  upstream      udp://127\.0\.0\.1:\d+: no answer to OPTIONS within 3s$`,
				`(?m)^ {20}fix: check that a firewall lets UDP port \d+ out`,
			},
		},
		{
			name: "reachable broker passes, under its own client id",
			setup: func(t *testing.T, e *doctorEnv) {
				b := synctest.StartBroker(t)
				e.brokers = []string{b.URL()}
				e.want = append(e.want, `(?m)^OK    broker        `+regexp.QuoteMeta(b.URL())+`: connected in [0-9.]+ ms as pbx-test-doctor$`)
			},
			wantCode: 0,
		},
		{
			name: "without a device id in the config, the running agent's id names the doctor's client",
			setup: func(t *testing.T, e *doctorEnv) {
				e.deviceID = ""
				doctorServeAPI(t, e.socket)
				b := synctest.StartBroker(t)
				e.brokers = []string{b.URL()}
			},
			wantCode: 0,
			want:     []string{`(?m)^OK    broker        tcp://.*: connected in [0-9.]+ ms as pbx-generated-7-doctor$`},
		},
		{
			name: "unreachable broker fails",
			setup: func(t *testing.T, e *doctorEnv) {
				addr := synctest.FreeAddr(t)
				e.brokers = []string{"tcp://" + addr}
				e.want = append(e.want, `(?m)^ {20}fix: nothing listens on `+regexp.QuoteMeta(addr))
			},
			wantCode: 1,
			want:     []string{`(?m)^FAIL  broker        tcp://127\.0\.0\.1:\d+: cannot connect: .*connection refused`},
		},
		{
			name: "TLS broker whose certificate expires soon warns, and the doctor never uses the device id",
			setup: func(t *testing.T, e *doctorEnv) {
				cert := doctorMakeCert(t, "broker", now.Add(-day), now.Add(10*day+time.Hour))
				url, ids := doctorTLSBroker(t, cert)
				e.brokers = []string{url}
				e.mqttTLS = map[string]string{"ca_file": cert.certFile}
				e.want = append(e.want,
					`(?m)^WARN  broker        `+regexp.QuoteMeta(url)+`: connected in [0-9.]+ ms as pbx-test-doctor; server certificate expires \d{4}-\d\d-\d\d \(in 10 days\)$`,
					`(?m)^ {20}fix: the broker's certificate expires soon`)
				e.after = func(string) {
					got := ids.list()
					if !slices.Contains(got, "pbx-test-doctor") || slices.Contains(got, "pbx-test") {
						t.Errorf("client ids at the broker = %q, want pbx-test-doctor and never the device id", got)
					}
				}
			},
			wantCode: 0,
		},
		{
			name: "TLS broker with a certificate this host does not trust fails",
			setup: func(t *testing.T, e *doctorEnv) {
				cert := doctorMakeCert(t, "broker", now.Add(-day), now.Add(400*day))
				url, _ := doctorTLSBroker(t, cert)
				e.brokers = []string{url}
				e.want = append(e.want, `(?m)^FAIL  broker        `+regexp.QuoteMeta(url)+`: cannot connect: .*certificate signed by unknown authority; server certificate valid until`)
			},
			wantCode: 1,
			want:     []string{`(?m)^ {20}fix: this host does not trust the broker's certificate: set mqtt\.tls\.ca_file`},
		},
		{
			name: "TLS broker with an expired certificate fails",
			setup: func(t *testing.T, e *doctorEnv) {
				cert := doctorMakeCert(t, "broker", now.Add(-10*day), now.Add(-day))
				url, _ := doctorTLSBroker(t, cert)
				e.brokers = []string{url}
				e.mqttTLS = map[string]string{"ca_file": cert.certFile}
			},
			wantCode: 1,
			want: []string{
				`(?m)^FAIL  broker        ssl://.*: cannot connect: .*; server certificate expired \d{4}-\d\d-\d\d$`,
				`(?m)^ {20}fix: the broker's certificate has expired`,
			},
		},
		{
			name: "missing CA file fails before connecting",
			setup: func(t *testing.T, e *doctorEnv) {
				cert := doctorMakeCert(t, "broker", now.Add(-day), now.Add(400*day))
				url, ids := doctorTLSBroker(t, cert)
				e.brokers = []string{url}
				e.mqttTLS = map[string]string{"ca_file": filepath.Join(t.TempDir(), "missing.pem")}
				e.after = func(string) {
					if got := ids.list(); len(got) != 0 {
						t.Errorf("connected as %q with a config the agent cannot use", got)
					}
				}
			},
			wantCode: 1,
			want: []string{
				`(?m)^FAIL  broker        ssl://.*: mqtt\.tls\.ca_file: open .*missing\.pem: no such file or directory; reachable, server certificate valid until`,
				`(?m)^ {20}fix: install the file Leadport gave you`,
			},
		},
		{
			name: "client certificate that expires soon warns",
			setup: func(t *testing.T, e *doctorEnv) {
				b := synctest.StartBroker(t)
				cert := doctorMakeCert(t, "pbx-test", now.Add(-day), now.Add(5*day+time.Hour))
				e.brokers = []string{b.URL()}
				e.mqttTLS = map[string]string{"cert_file": cert.certFile, "key_file": cert.keyFile}
				e.want = append(e.want, `(?m)^WARN  client cert   `+regexp.QuoteMeta(cert.certFile)+` \(pbx-test\) expires \d{4}-\d\d-\d\d \(in 5 days\)$`)
			},
			wantCode: 0,
			want:     []string{`(?m)^OK    broker        tcp://`, `(?m)^ {20}fix: ask Leadport for a new client certificate`},
		},
		{
			name:     "no trusted keys fails",
			setup:    func(t *testing.T, e *doctorEnv) { e.keys = nil },
			wantCode: 1,
			want: []string{
				`(?m)^FAIL  trusted keys  none: signed commands cannot be verified`,
				`(?m)^ {20}fix: add the keys Leadport gives you under commands\.trusted_keys`,
			},
		},
		{
			name: "the example file's keys warn",
			setup: func(t *testing.T, e *doctorEnv) {
				e.keys = map[string]string{"platform-2026": exampleKeys[0]}
			},
			wantCode: 0,
			want:     []string{`(?m)^WARN  trusted keys  platform-2026: the example file's illustration keys`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newDoctorEnv(t)
			tt.setup(t, e)
			if e.path == "" {
				e.writeConfig()
			}
			code, out := runDoctor(t, e.path)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			for _, w := range append(slices.Clone(tt.want), e.want...) {
				if !regexp.MustCompile(w).MatchString(out) {
					t.Errorf("output does not match %s", w)
				}
			}
			for _, w := range tt.notWant {
				if regexp.MustCompile(w).MatchString(out) {
					t.Errorf("output matches %s", w)
				}
			}
			if e.after != nil {
				e.after(out)
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// As root with a leadport-agent user, the data must belong to that user:
// a directory and key root owns are a failed start waiting to happen.
func TestDoctorServiceUserOwnership(t *testing.T) {
	if !modeChecks || os.Geteuid() != 0 {
		t.Skip("needs root on a system with file owners, to own files the service user does not")
	}
	t.Parallel()
	e := newDoctorEnv(t)
	key := filepath.Join(e.dataDir, "device.key")
	doctorWriteMode(t, key, make([]byte, 32), 0o600)
	e.writeConfig()
	cfg, err := config.Load(e.path)
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Config: cfg, self: currentAccount(),
		owner: account{name: "leadport-agent", uid: 4242, gids: []int{4242}, known: true, service: true}}

	dir := dataDir{}.check(env)
	if dir.Status != Fail || !strings.Contains(dir.Found, "owned by root: the service user leadport-agent cannot write it") ||
		dir.Fix != "chown -R leadport-agent: "+e.dataDir {
		t.Errorf("data dir = %+v, want FAIL: the service user cannot write it, fix chown -R", dir)
	}
	k := deviceKey{}.check(env)
	if k.Status != Fail || !strings.Contains(k.Found, "the service user leadport-agent cannot read it") || k.Fix != "chown leadport-agent: "+key {
		t.Errorf("device key = %+v, want FAIL: the service user cannot read it, fix chown", k)
	}

	// Group-writable for the service user's group: it can write, but
	// another owner is still worth a warning.
	doctorChmod(t, e.dataDir, 0o770)
	if err := os.Chown(e.dataDir, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if dir := (dataDir{}).check(env); dir.Status != Warn {
		t.Errorf("group-writable data dir = %+v, want WARN", dir)
	}
}

// The JSON report, as `leadport-agent doctor --json` prints it.
func TestDoctorJSON(t *testing.T) {
	t.Parallel()
	e := newDoctorEnv(t)
	doctorChmod(t, e.dataDir, 0o755)
	e.keys = nil
	e.writeConfig()
	var out bytes.Buffer
	r := Run(context.Background(), Options{Config: e.path, serviceUser: noServiceUser})
	if err := r.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(r); code != 1 {
		t.Errorf("exit code = %d, want 1 (no trusted keys)", code)
	}
	var rep struct {
		Config string         `json:"config"`
		OK     bool           `json:"ok"`
		Counts map[string]int `json:"counts"`
		Checks []Result       `json:"checks"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	if rep.OK || rep.Config != e.path {
		t.Errorf("ok = %v, config = %q; want false, %q", rep.OK, rep.Config, e.path)
	}
	byName := map[string]Result{}
	counts := map[Status]int{}
	for _, c := range rep.Checks {
		if !slices.Contains([]Status{OK, Warn, Fail, Skip}, c.Status) {
			t.Errorf("check %s: status %q", c.Name, c.Status)
		}
		if (c.Status == Warn || c.Status == Fail) && c.Fix == "" {
			t.Errorf("check %s is %s without a fix", c.Name, c.Status)
		}
		counts[c.Status]++
		byName[c.Name] = c
	}
	if got := byName["trusted keys"]; got.Status != Fail {
		t.Errorf("trusted keys = %+v, want FAIL", got)
	}
	if got := byName["data dir"]; got.Status != Warn || got.Fix != "chmod 750 "+e.dataDir {
		t.Errorf("data dir = %+v, want WARN with fix chmod 750", got)
	}
	for _, s := range []Status{OK, Warn, Fail} {
		if rep.Counts[string(s)] != counts[s] {
			t.Errorf("counts[%s] = %d, but %d checks say so", s, rep.Counts[string(s)], counts[s])
		}
	}
	if strings.Contains(out.String(), "fix:") {
		t.Error("JSON output carries text-report lines")
	}
}

func doctorWriteMode(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	doctorChmod(t, path, mode) // past the umask
}

func doctorChmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
