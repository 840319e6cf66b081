package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// What the demo's device is.
const (
	deviceID    = "demo-pbx"
	line        = "+15551230001"
	topicPrefix = "leadport/v1"
	platformKid = "demo-platform"
)

// Options say where and how the demo runs.
type Options struct {
	// Agent is the leadport-agent binary (make build writes bin/leadport-agent).
	Agent string
	// Dir holds the config, the agent's data dir, its socket and its log;
	// empty: a new temporary directory, kept afterwards.
	Dir string
	// APIPort is the status page's port on 127.0.0.1; when it is 0 or
	// taken, a free one.
	APIPort int
	// Out is where the demo narrates; default os.Stdout.
	Out io.Writer
}

// Demo is the agent between a simulated PBX and a simulated Leadport edge,
// with an MQTT broker standing in for the platform.
type Demo struct {
	opts    Options
	bin     string // opts.Agent, absolute
	out     io.Writer
	t0      time.Time
	Dir     string // the working directory
	DataDir string // the agent's data_dir
	Config  string // its configuration file
	Socket  string // its API socket
	Log     string // its log
	KeyFile string // the platform's private key (fleet keygen)
	APIURL  string // http://127.0.0.1:PORT
	sipPort int    // where the agent listens for the PBX

	broker *broker
	edge   *userAgent
	pbx    *userAgent

	agent     *exec.Cmd
	agentLog  *os.File
	agentDone chan struct{}
	agentErr  error
	closeOnce sync.Once
}

// Start sets everything up and starts the agent; it returns once the
// agent's proxy is up, its upstream answers and it is connected to the
// broker. On error what was started is stopped again.
func Start(ctx context.Context, opts Options) (d *Demo, err error) {
	d = &Demo{opts: opts, out: opts.Out, t0: time.Now()}
	if d.out == nil {
		d.out = os.Stdout
	}
	defer func() {
		if err != nil {
			d.Close()
			d = nil
		}
	}()
	if opts.Agent == "" {
		return d, errors.New("no agent binary given (-agent bin/leadport-agent; `make build` writes it)")
	}
	if fi, err := os.Stat(opts.Agent); err != nil || fi.IsDir() {
		return d, fmt.Errorf("agent binary %s: not found (run `make build` first)", opts.Agent)
	}
	if d.bin, err = filepath.Abs(opts.Agent); err != nil {
		return d, err
	}
	if d.Dir, err = workDir(opts.Dir); err != nil {
		return d, err
	}
	d.DataDir = filepath.Join(d.Dir, "data")
	d.Config = filepath.Join(d.Dir, "agent.yaml")
	d.Socket = filepath.Join(d.Dir, "api.sock")
	d.Log = filepath.Join(d.Dir, "agent.log")
	d.KeyFile = filepath.Join(d.Dir, "platform.key")
	d.say("working directory %s", d.Dir)

	if d.broker, err = startBroker(deviceID, topicPrefix); err != nil {
		return d, fmt.Errorf("MQTT broker: %w", err)
	}
	d.say("MQTT broker (mochi-mqtt, in this process) on %s, watching %s/dev/%s/#", d.broker.url, topicPrefix, deviceID)
	if d.edge, err = newUserAgent("leadport-edge", "edge"); err != nil {
		return d, fmt.Errorf("simulated edge: %w", err)
	}
	d.say("Leadport edge (sipgo UA) on udp://127.0.0.1:%d: answers OPTIONS, rings each INVITE, then answers it", d.edge.port)
	if d.pbx, err = newUserAgent("demo-pbx", "pbx"); err != nil {
		return d, fmt.Errorf("simulated PBX: %w", err)
	}
	d.say("PBX (sipgo UA) on udp://127.0.0.1:%d, line %s, its trunk pointing at the agent", d.pbx.port, line)

	pub, err := d.platformKey(ctx)
	if err != nil {
		return d, err
	}
	if d.sipPort, err = freeUDPPort(); err != nil {
		return d, err
	}
	apiPort := opts.APIPort
	if apiPort == 0 || !tcpPortFree(apiPort) {
		if apiPort != 0 {
			d.say("port %d is taken: the status page gets another one", apiPort)
		}
		if apiPort, err = freeTCPPort(); err != nil {
			return d, err
		}
	}
	d.APIURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	conf := fmt.Sprintf(`# Written by scripts/demo: the agent between a simulated PBX and a
# simulated Leadport edge, syncing with an in-process MQTT broker.
device_id: %s
data_dir: %q
lines: [%q]
default_country: "1"
sip:
  listen: ["udp://127.0.0.1:%d"]
  upstream: "udp://127.0.0.1:%d"
mqtt:
  brokers: [%q]
commands:
  trusted_keys:
    %s: %q
api:
  socket: %q
  listen: "127.0.0.1:%d"
log: {level: info}
`, deviceID, d.DataDir, line, d.sipPort, d.edge.port, d.broker.url, platformKid, pub, d.Socket, apiPort)
	if err := os.WriteFile(d.Config, []byte(conf), 0o600); err != nil {
		return d, err
	}
	d.say("config %s: sip.listen udp://127.0.0.1:%d, sip.upstream the edge, mqtt.brokers the broker, api.listen 127.0.0.1:%d", d.Config, d.sipPort, apiPort)
	if err := d.startAgent(); err != nil {
		return d, err
	}
	d.say("$ %s run --config %s   (log: %s)", d.opts.Agent, d.Config, d.Log)
	if err := d.waitReady(ctx); err != nil {
		return d, err
	}
	return d, nil
}

// workDir makes (or takes) the directory the demo works in.
func workDir(dir string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "leadport-demo-")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return abs, os.MkdirAll(abs, 0o700)
}

// platformKey makes the platform's signing key with `fleet keygen` (or
// reads the one a previous run in the same directory made) and returns
// its public half for commands.trusted_keys.
func (d *Demo) platformKey(ctx context.Context) (string, error) {
	if _, err := os.Stat(d.KeyFile); errors.Is(err, os.ErrNotExist) {
		out, err := d.run(ctx, "fleet", "keygen", "--out", d.KeyFile, "--kid", platformKid)
		if err != nil {
			return "", fmt.Errorf("fleet keygen: %v\n%s", err, out)
		}
		var k struct {
			PublicKey string `json:"public_key"`
		}
		if err := json.Unmarshal([]byte(out), &k); err != nil || k.PublicKey == "" {
			return "", fmt.Errorf("fleet keygen printed %q", out)
		}
		d.say("$ %s fleet keygen --out %s --kid %s", d.opts.Agent, d.KeyFile, platformKid)
		d.say("  -> platform signing key; public key %s goes into commands.trusted_keys", k.PublicKey)
		return k.PublicKey, nil
	}
	b, err := os.ReadFile(d.KeyFile)
	if err != nil {
		return "", err
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return "", fmt.Errorf("%s: not a key written by fleet keygen", d.KeyFile)
	}
	pub := base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
	d.say("platform signing key %s (from an earlier run), public key %s", d.KeyFile, pub)
	return pub, nil
}

// startAgent runs `leadport-agent run --config ...` with its output in
// the log file.
func (d *Demo) startAgent() error {
	var err error
	d.agentLog, err = os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	d.agent = exec.Command(d.bin, "run", "--config", d.Config)
	d.agent.Dir = d.Dir
	d.agent.Stdout, d.agent.Stderr = d.agentLog, d.agentLog
	// Its own process group: Ctrl-C in the terminal reaches the demo only,
	// and the demo stops the agent with SIGTERM, as systemd would.
	d.agent.SysProcAttr = sysProcAttr()
	if err := d.agent.Start(); err != nil {
		d.agentLog.Close()
		d.agent = nil
		return fmt.Errorf("start the agent: %w", err)
	}
	d.agentDone = make(chan struct{})
	go func() {
		d.agentErr = d.agent.Wait()
		close(d.agentDone)
	}()
	return nil
}

// agentExited reports whether the agent process ended.
func (d *Demo) agentExited() bool {
	if d.agentDone == nil {
		return true
	}
	select {
	case <-d.agentDone:
		return true
	default:
		return false
	}
}

// Done is closed when the agent process ends.
func (d *Demo) Done() <-chan struct{} { return d.agentDone }

// waitReady polls the agent's API until the proxy is up, the edge answered
// its OPTIONS and the broker connection is up.
func (d *Demo) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	var st map[string]any
	for {
		if d.agentExited() {
			return fmt.Errorf("the agent exited (%v); the end of its log:\n%s", d.agentErr, d.logTail(20))
		}
		var err error
		st, err = d.apiStatus(ctx)
		if err == nil && lookup(st, "sip", "upstream_check", "answers") == true && lookup(st, "sync", "connected") == true {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent was not ready within 30 s (status: %v, err %v); the end of its log:\n%s", st, err, d.logTail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	var listeners []string
	if ls, ok := lookup(st, "sip", "listeners").([]any); ok {
		for _, l := range ls {
			listeners = append(listeners, fmt.Sprint(l))
		}
	}
	d.say("agent up: SIP proxy on %s, the edge answers its OPTIONS (%v, %v ms), connected to %v; status page %s/",
		strings.Join(listeners, ", "), num(lookup(st, "sip", "upstream_check", "status")),
		lookup(st, "sip", "upstream_check", "rtt_ms"), lookup(st, "sync", "broker"), d.APIURL)
	return nil
}

// apiStatus reads GET /v1/status from the agent's loopback port.
func (d *Demo) apiStatus(ctx context.Context) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", d.APIURL+"/v1/status", nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/status: %s", res.Status)
	}
	var st map[string]any
	return st, json.NewDecoder(res.Body).Decode(&st)
}

// run runs the agent binary with args (a CLI command) and returns its
// combined output.
func (d *Demo) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimRight(out.String(), "\n"), err
}

// Close stops the agent with SIGTERM (and everything else the demo
// started) and says where the agent's files are. It may be called more
// than once.
func (d *Demo) Close() {
	d.closeOnce.Do(func() {
		if d.agent != nil {
			if d.agentExited() {
				d.say("the agent had already exited (%v)", d.agentErr)
			} else {
				d.say("stopping the agent (SIGTERM)")
				d.agent.Process.Signal(syscall.SIGTERM)
				select {
				case <-d.agentDone:
					if d.agentErr != nil {
						d.say("the agent exited: %v", d.agentErr)
					} else {
						d.say("the agent stopped cleanly")
					}
				case <-time.After(15 * time.Second):
					d.agent.Process.Kill()
					<-d.agentDone
					d.say("the agent did not stop within 15 s of SIGTERM; killed it")
				}
			}
			d.agentLog.Close()
		}
		if d.pbx != nil {
			d.pbx.close()
		}
		if d.edge != nil {
			d.edge.close()
		}
		if d.broker != nil {
			d.broker.close()
		}
		if d.agent != nil {
			d.say("its data dir: %s", d.DataDir)
			d.say("its log:      %s", d.Log)
			d.say("its config:   %s", d.Config)
		}
	})
}

// logTail is the end of the agent's log.
func (d *Demo) logTail(n int) string {
	b, err := os.ReadFile(d.Log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// say prints one line, stamped with the seconds since the demo started.
func (d *Demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "%s%s\n", d.stamp(), fmt.Sprintf(format, args...))
}

// begin starts a line that more adds to as things happen; end finishes it.
func (d *Demo) begin(format string, args ...any) {
	fmt.Fprintf(d.out, "%s%s", d.stamp(), fmt.Sprintf(format, args...))
}

func (d *Demo) more(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

func (d *Demo) end(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *Demo) stamp() string {
	return fmt.Sprintf("%5.1fs  ", time.Since(d.t0).Seconds())
}

// lookup walks nested JSON objects.
func lookup(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// num prints a JSON number as an integer when it is one.
func num(v any) string {
	if f, ok := v.(float64); ok && f == float64(int64(f)) {
		return strconv.FormatInt(int64(f), 10)
	}
	if v == nil {
		return "0"
	}
	return fmt.Sprint(v)
}

// freeUDPPort is a UDP port of 127.0.0.1 nothing listens on right now.
func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// freeTCPPort is a TCP port of 127.0.0.1 nothing listens on right now.
func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tcpPortFree(port int) bool {
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
