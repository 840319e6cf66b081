package synctest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// NATSVersion is the nats-server release the cluster runs: scripts/setup.sh
// builds it from its Go module into NATSServerPath. Debian's 2.9.10 refuses
// MQTT topics with a '.' (a device id may have one) and has no QoS 2; 2.10
// maps '.' to '//' (nats-server PR 4243) and took QoS 2. docs/fleet.md says
// more.
const NATSVersion = "v2.14.10"

// NATSServerPath is where scripts/setup.sh puts the pinned nats-server:
// LEADPORT_NATS_SERVER when set, else under the user's cache directory,
// apart from Debian's /usr/sbin/nats-server, which TestNATS keeps using.
func NATSServerPath() string {
	if p := os.Getenv("LEADPORT_NATS_SERVER"); p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "leadport-tools", "nats-server-"+NATSVersion, "nats-server")
}

// NATSNode is one nats-server process of a NATSCluster.
type NATSNode struct {
	Name string
	// MQTT is the node's MQTT listener (host:port); Client its NATS
	// protocol listener; Monitor its HTTP monitoring port.
	MQTT, Client, Cluster, Monitor string
	conf, log                      string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// NATSCluster is a cluster of nats-server processes on loopback, with
// JetStream and MQTT on every node and the MQTT state (sessions, retained
// messages, QoS 1 messages) in streams replicated on every node.
type NATSCluster struct {
	Dir   string
	Nodes []*NATSNode
	bin   string
}

// StartNATSCluster writes the configuration of n nodes under dir, starts
// them and waits until they are routed to each other, JetStream has a
// meta leader, and each accepts an MQTT session (which also makes the
// MQTT streams, replicated on every node). mqttExtra are lines added to
// each node's mqtt block (such as `ack_wait: "5s"`). Stop ends them.
func StartNATSCluster(ctx context.Context, bin, dir string, n int, mqttExtra ...string) (*NATSCluster, error) {
	c := &NATSCluster{Dir: dir, bin: bin}
	ports, err := freePorts(4 * n)
	if err != nil {
		return nil, err
	}
	var routes []string
	for i := range n {
		nd := &NATSNode{Name: fmt.Sprintf("n%d", i+1),
			Client: ports[4*i], Cluster: ports[4*i+1], MQTT: ports[4*i+2], Monitor: ports[4*i+3]}
		nd.conf = filepath.Join(dir, nd.Name+".conf")
		nd.log = filepath.Join(dir, nd.Name+".log")
		c.Nodes = append(c.Nodes, nd)
		routes = append(routes, fmt.Sprintf("nats-route://%s", nd.Cluster))
	}
	for _, nd := range c.Nodes {
		if err := os.MkdirAll(filepath.Join(dir, nd.Name), 0o700); err != nil {
			return nil, fmt.Errorf("nats cluster: %w", err)
		}
		if err := os.WriteFile(nd.conf, []byte(nodeConf(dir, nd, routes, mqttExtra)), 0o600); err != nil {
			return nil, fmt.Errorf("nats cluster: %w", err)
		}
	}
	for _, nd := range c.Nodes {
		if err := c.start(nd); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Stop()
		return nil, fmt.Errorf("%w\n%s", err, c.Logs(3000))
	}
	return c, nil
}

// nodeConf is one node's configuration: every node routes to all the
// others (its own route is ignored), JetStream stores under the node's
// directory, MQTT streams have as many replicas as there are nodes (at
// most 3, JetStream's usual maximum that still survives one loss).
func nodeConf(dir string, nd *NATSNode, routes, mqttExtra []string) string {
	replicas := min(len(routes), 3)
	extra := ""
	for _, l := range mqttExtra {
		extra += "  " + l + "\n"
	}
	return fmt.Sprintf(`server_name: %s
listen: %s
http: %s
jetstream {
  store_dir: %q
}
cluster {
  name: leadport
  listen: %s
  routes: [%s]
}
mqtt {
  listen: %s
  stream_replicas: %d
%s}
`, nd.Name, nd.Client, nd.Monitor, filepath.Join(dir, nd.Name, "js"), nd.Cluster,
		strings.Join(routes, ", "), nd.MQTT, replicas, extra)
}

func freePorts(n int) ([]string, error) {
	// All held open together, so no two are the same.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("nats cluster: free port: %w", err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func (c *NATSCluster) start(nd *NATSNode) error {
	out, err := os.OpenFile(nd.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("nats cluster: %w", err)
	}
	nd.cmd = exec.Command(c.bin, "-c", nd.conf)
	nd.cmd.Stdout, nd.cmd.Stderr = out, out
	dieWithParent(nd.cmd)
	if err := nd.cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("nats cluster: start %s: %w", nd.Name, err)
	}
	nd.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); out.Close(); close(done) }(nd.cmd, nd.done)
	return nil
}

// MQTTURLs are the nodes' MQTT listeners as mqtt.brokers takes them.
func (c *NATSCluster) MQTTURLs() []string {
	var urls []string
	for _, nd := range c.Nodes {
		urls = append(urls, "tcp://"+nd.MQTT)
	}
	return urls
}

// Node is the node whose MQTT listener is addr (a URL or host:port), or nil.
func (c *NATSCluster) Node(addr string) *NATSNode {
	for _, nd := range c.Nodes {
		if strings.Contains(addr, nd.MQTT) {
			return nd
		}
	}
	return nil
}

// PID is the node's process id; 0 when it is not running.
func (nd *NATSNode) PID() int {
	if !nd.Running() {
		return 0
	}
	return nd.cmd.Process.Pid
}

// Running reports whether the node's process is alive.
func (nd *NATSNode) Running() bool {
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

// Kill ends the node with SIGKILL, as a crashed machine would, and waits
// for the process to be gone.
func (c *NATSCluster) Kill(nd *NATSNode) error {
	if !nd.Running() {
		return fmt.Errorf("nats cluster: %s is not running", nd.Name)
	}
	if err := nd.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("nats cluster: kill %s: %w", nd.Name, err)
	}
	<-nd.done
	return nil
}

// Restart starts a killed node again on the same ports and store, and
// waits until the cluster is ready again.
func (c *NATSCluster) Restart(ctx context.Context, nd *NATSNode) error {
	if nd.Running() {
		return fmt.Errorf("nats cluster: %s is running", nd.Name)
	}
	if err := c.start(nd); err != nil {
		return err
	}
	return c.WaitReady(ctx)
}

// Stop ends every node (SIGTERM, then SIGKILL after 10 s).
func (c *NATSCluster) Stop() {
	for _, nd := range c.Nodes {
		if nd.Running() {
			nd.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, nd := range c.Nodes {
		if !nd.Running() {
			continue
		}
		select {
		case <-nd.done:
		case <-time.After(10 * time.Second):
			nd.cmd.Process.Kill()
			<-nd.done
		}
	}
}

// Logs returns the end of each node's log, for a failed test.
func (c *NATSCluster) Logs(maxBytes int) string {
	var b strings.Builder
	for _, nd := range c.Nodes {
		data, _ := os.ReadFile(nd.log)
		if len(data) > maxBytes {
			data = data[len(data)-maxBytes:]
		}
		fmt.Fprintf(&b, "--- %s (%s)\n%s\n", nd.Name, nd.log, data)
	}
	return b.String()
}

// WaitReady polls until every running node is routed to the others
// running, agrees on a JetStream meta leader, reports itself healthy, and
// accepts an MQTT session; no fixed sleeps.
func (c *NATSCluster) WaitReady(ctx context.Context) error {
	var running []*NATSNode
	for _, nd := range c.Nodes {
		if nd.Running() {
			running = append(running, nd)
		}
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	last := errors.New("not polled yet")
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if last = c.ready(ctx, hc, running); last == nil {
			return nil
		}
		for _, nd := range running {
			if !nd.Running() {
				return fmt.Errorf("nats cluster: %s exited:\n%s", nd.Name, c.Logs(2000))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nats cluster not ready: %w (%w)", last, ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *NATSCluster) ready(ctx context.Context, hc *http.Client, running []*NATSNode) error {
	leader := ""
	for _, nd := range running {
		var routez struct {
			NumRoutes int `json:"num_routes"`
		}
		if err := getJSON(ctx, hc, "http://"+nd.Monitor+"/routez", &routez); err != nil {
			return err
		}
		// Newer servers open several route connections per peer (route
		// pooling): at least one per peer.
		if routez.NumRoutes < len(running)-1 {
			return fmt.Errorf("%s has %d routes, want %d", nd.Name, routez.NumRoutes, len(running)-1)
		}
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if err := getJSON(ctx, hc, "http://"+nd.Monitor+"/jsz", &jsz); err != nil {
			return err
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			return fmt.Errorf("%s knows no JetStream meta leader", nd.Name)
		}
		if leader != "" && jsz.Meta.Leader != leader {
			return fmt.Errorf("nodes disagree on the meta leader (%s, %s)", leader, jsz.Meta.Leader)
		}
		leader = jsz.Meta.Leader
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.Monitor+"/healthz", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("%s healthz: %w", nd.Name, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s healthz: %s %s", nd.Name, resp.Status, strings.TrimSpace(string(body)))
		}
	}
	for _, nd := range running {
		if err := probeMQTT(nd); err != nil {
			return err
		}
	}
	return nil
}

func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("monitor %s: %w", url, err)
	}
	return nil
}

// probeMQTT opens and closes a clean MQTT session on the node: MQTT is
// served only once the node's JetStream can hold the session.
func probeMQTT(nd *NATSNode) error {
	opts := paho.NewClientOptions().AddBroker("tcp://" + nd.MQTT).SetClientID("probe-" + nd.Name).
		SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false).SetConnectRetry(false)
	cli := paho.NewClient(opts)
	tok := cli.Connect()
	if !tok.WaitTimeout(6 * time.Second) {
		return fmt.Errorf("%s: MQTT connect timed out", nd.Name)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%s: MQTT connect: %w", nd.Name, err)
	}
	cli.Disconnect(50)
	return nil
}

// StartNATSClusterT starts a three-node cluster for a test, from the
// pinned nats-server (NATSServerPath), and stops it at cleanup, showing
// the nodes' logs when the test failed. Without the binary the test fails
// under LEADPORT_E2E=1 (scripts/setup.sh builds it), else skips.
// mqttExtra as for StartNATSCluster.
func StartNATSClusterT(t testing.TB, mqttExtra ...string) *NATSCluster {
	t.Helper()
	bin := NATSServerPath()
	if !isExec(bin) {
		if os.Getenv("LEADPORT_E2E") == "1" {
			t.Fatalf("nats-server %s is not at %s (scripts/setup.sh builds it)", NATSVersion, bin)
		}
		t.Skipf("nats-server %s is not at %s (scripts/setup.sh builds it)", NATSVersion, bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := StartNATSCluster(ctx, bin, t.TempDir(), 3, mqttExtra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("nats cluster logs:\n%s", c.Logs(16000))
		}
	})
	return c
}

// ConsumerState is what JetStream holds for the MQTT subscriptions whose
// filter subject contains a string: messages sent and not acknowledged,
// and messages sent more than once.
type ConsumerState struct {
	Consumers, AckPending, Redelivered int
}

// Consumers reads, from a running node's monitoring port, the MQTT
// consumers whose filter subject contains filter (NATS subjects: an MQTT
// topic's '/' is '.').
func (c *NATSCluster) Consumers(ctx context.Context, filter string) (ConsumerState, error) {
	var st ConsumerState
	var nd *NATSNode
	for _, n := range c.Nodes {
		if n.Running() {
			nd = n
			break
		}
	}
	if nd == nil {
		return st, errors.New("nats cluster: no node running")
	}
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Consumers []struct {
					Config struct {
						Filter  string   `json:"filter_subject"`
						Filters []string `json:"filter_subjects"`
					} `json:"config"`
					AckPending  int `json:"num_ack_pending"`
					Redelivered int `json:"num_redelivered"`
				} `json:"consumer_detail"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	if err := getJSON(ctx, hc, "http://"+nd.Monitor+"/jsz?accounts=true&streams=true&consumers=true&config=true", &jsz); err != nil {
		return st, err
	}
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			for _, co := range s.Consumers {
				if !strings.Contains(co.Config.Filter, filter) && !strings.Contains(strings.Join(co.Config.Filters, " "), filter) {
					continue
				}
				st.Consumers++
				st.AckPending += co.AckPending
				st.Redelivered += co.Redelivered
			}
		}
	}
	return st, nil
}

// Reconfigure rewrites every node's configuration with mqttExtra in place
// of the lines given at start, has each running node reload it (SIGHUP),
// and waits until each reports the reload (its config_load_time moves).
func (c *NATSCluster) Reconfigure(ctx context.Context, mqttExtra ...string) error {
	var routes []string
	for _, nd := range c.Nodes {
		routes = append(routes, fmt.Sprintf("nats-route://%s", nd.Cluster))
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	type varz struct {
		Loaded string `json:"config_load_time"`
	}
	for _, nd := range c.Nodes {
		if err := os.WriteFile(nd.conf, []byte(nodeConf(c.Dir, nd, routes, mqttExtra)), 0o600); err != nil {
			return fmt.Errorf("nats cluster: %w", err)
		}
		if !nd.Running() {
			continue
		}
		var before varz
		if err := getJSON(ctx, hc, "http://"+nd.Monitor+"/varz", &before); err != nil {
			return err
		}
		if err := nd.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			return fmt.Errorf("nats cluster: reload %s: %w", nd.Name, err)
		}
		for {
			var now varz
			if err := getJSON(ctx, hc, "http://"+nd.Monitor+"/varz", &now); err == nil && now.Loaded != before.Loaded {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("nats cluster: %s did not reload: %w", nd.Name, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// Log is what the node has logged so far (at most the last 1 MiB).
func (nd *NATSNode) Log() string {
	f, err := os.Open(nd.log)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 1<<20 {
		f.Seek(fi.Size()-1<<20, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// NodeOf is the running node an MQTT client is connected to (its
// monitoring port lists it by client id), or nil.
func (c *NATSCluster) NodeOf(ctx context.Context, clientID string) (*NATSNode, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, nd := range c.Nodes {
		if !nd.Running() {
			continue
		}
		var connz struct {
			N int `json:"num_connections"`
		}
		if err := getJSON(ctx, hc, "http://"+nd.Monitor+"/connz?mqtt_client="+clientID, &connz); err != nil {
			return nil, err
		}
		if connz.N > 0 {
			return nd, nil
		}
	}
	return nil, nil
}
