//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/sync/synctest"
)

// The limits TestScanners configures; the assertions derive from them.
const (
	scanRate        = 20
	scanBurst       = 20
	scanMaxFailures = 5
	scanRSSLimit    = 64 << 20
)

// needSipvicious returns the directory of Debian's sipvicious tools
// (svmap, svwar, svcrack). Without them the test is skipped, or fails when
// LEADPORT_E2E=1 (scripts/setup.sh installs them).
func needSipvicious(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"svmap", "svwar", "svcrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("LEADPORT_E2E") == "1" {
				t.Fatalf("%s is not on PATH (Debian package sipvicious; scripts/setup.sh installs it) and LEADPORT_E2E=1", tool)
			}
			t.Skipf("%s is not on PATH (Debian package sipvicious; scripts/setup.sh installs it); LEADPORT_E2E=1 makes this a failure", tool)
		}
	}
}

// scanEdge is the upstream: a sipgo registrar that challenges every
// REGISTER (401 without credentials, 403 with wrong ones) and answers
// INVITEs 486, counting what it receives by method and by original source
// (the Via the agent stamped with received=).
type scanEdge struct {
	port int
	mu   sync.Mutex
	got  map[string]map[string]int // source host -> method -> count
}

func newScanEdge(t *testing.T) *scanEdge {
	t.Helper()
	e := &scanEdge{port: freePort(t), got: map[string]map[string]int{}}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("edge"), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(req *sip.Request, tx sip.ServerTransaction) {
		e.count(req)
		var res *sip.Response
		switch {
		case req.Method == sip.REGISTER && req.GetHeader("Authorization") != nil:
			res = sip.NewResponseFromRequest(req, 403, "Forbidden", nil)
		case req.Method == sip.REGISTER:
			res = sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
			res.AppendHeader(sip.NewHeader("WWW-Authenticate", `Digest realm="edge.e2e", nonce="5c4d1e", algorithm=MD5`))
		case req.Method == sip.INVITE:
			res = sip.NewResponseFromRequest(req, 486, "Busy Here", nil)
		default:
			res = sip.NewResponseFromRequest(req, 200, "OK", nil)
		}
		tx.Respond(res)
	}
	for _, m := range []sip.RequestMethod{sip.REGISTER, sip.INVITE, sip.OPTIONS, sip.MESSAGE, sip.SUBSCRIBE} {
		srv.OnRequest(m, answer)
	}
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { e.count(req) })
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ListenAndServe(ctx, "udp", fmt.Sprintf("127.0.0.1:%d", e.port))
	t.Cleanup(func() { cancel(); ua.Close() })
	return e
}

// count files a request under the host that sent it to the agent: the
// received= of the second Via (the agent's is first).
func (e *scanEdge) count(req *sip.Request) {
	src := "agent"
	if vias := req.GetHeaders("Via"); len(vias) > 1 {
		if v, ok := vias[1].(*sip.ViaHeader); ok {
			src = v.Host
			if r, ok := v.Params.Get("received"); ok && r != "" {
				src = r
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.got[src] == nil {
		e.got[src] = map[string]int{}
	}
	e.got[src][string(req.Method)]++
}

func (e *scanEdge) from(host string) map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for m, n := range e.got[host] {
		out[m] = n
	}
	return out
}

// udpRelay stands in front of the agent for one scanner: the scanner
// sends to the relay on 127.0.0.1, the relay sends on from its own
// address (from), and counts the bytes each way at the socket. It is the
// measure of "never more bytes to a source than it sent" that does not
// trust the agent's own counters.
type udpRelay struct {
	front, back *net.UDPConn
	mu          sync.Mutex
	client      *net.UDPAddr
	in, out     int            // bytes to the agent, bytes from it
	answers     map[string]int // responses from the agent by Call-ID+CSeq: distinct answers
	packetsOut  int
	first, last time.Time // first request, last answer
}

func newUDPRelay(t *testing.T, from string, agentPort int) *udpRelay {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: agentPort})
	if err != nil {
		front.Close()
		t.Fatalf("relay from %s: %v", from, err)
	}
	r := &udpRelay{front: front, back: back, answers: map[string]int{}}
	go func() {
		b := make([]byte, 65535)
		for {
			n, addr, err := front.ReadFromUDP(b)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = addr
			r.in += n
			if r.first.IsZero() {
				r.first = time.Now()
			}
			r.mu.Unlock()
			back.Write(b[:n])
		}
	}()
	go func() {
		b := make([]byte, 65535)
		for {
			n, err := back.Read(b)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.out += n
			r.packetsOut++
			r.answers[answerKey(b[:n])]++
			r.last = time.Now()
			client := r.client
			r.mu.Unlock()
			if client != nil {
				front.WriteToUDP(b[:n], client)
			}
		}
	}()
	t.Cleanup(func() { front.Close(); back.Close() })
	return r
}

func (r *udpRelay) port() int { return r.front.LocalAddr().(*net.UDPAddr).Port }

func (r *udpRelay) counts() (in, out, answers, packets int, span time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.first.IsZero() && r.last.After(r.first) {
		span = r.last.Sub(r.first)
	}
	return r.in, r.out, len(r.answers), r.packetsOut, span
}

// answerKey tells one answer from its retransmissions: Call-ID and CSeq.
func answerKey(msg []byte) string {
	var key []string
	sc := bufio.NewScanner(bytes.NewReader(msg))
	for sc.Scan() {
		l := sc.Text()
		if l == "" {
			break
		}
		name, v, _ := strings.Cut(l, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "call-id", "i", "cseq":
			key = append(key, strings.TrimSpace(v))
		}
	}
	return strings.Join(key, "|")
}

// rawExchange sends one request from a socket bound to from and returns
// the status of the first final answer to it, 0 when none came within 5 s.
func rawExchange(t *testing.T, from string, agentPort int, method, callID string) int {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: agentPort})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	la := c.LocalAddr().String()
	msg := fmt.Sprintf("%s sip:+15557654321@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:+15551230001@127.0.0.1>;tag=%s\r\nTo: <sip:+15557654321@127.0.0.1>\r\nCall-ID: %s\r\nCSeq: 1 %s\r\n"+
		"Contact: <sip:+15551230001@%s>\r\nX-Padding: %s\r\nContent-Length: 0\r\n\r\n",
		method, la, callID, callID, callID, method, la, strings.Repeat("x", 400))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	b := make([]byte, 65535)
	for time.Now().Before(deadline) {
		c.SetReadDeadline(deadline)
		n, err := c.Read(b)
		if err != nil {
			return 0
		}
		var code int
		if _, err := fmt.Sscanf(string(b[:n]), "SIP/2.0 %d", &code); err == nil && code >= 200 {
			return code
		}
	}
	return 0
}

// peakRSS is the process's high-water resident set (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestScanners runs Debian's sipvicious tools (svmap, svwar with REGISTER
// and INVITE, svcrack) against the real binary in register mode, each
// from its own loopback address behind a byte-counting relay, with only
// 127.0.0.1 trusted. The agent must stay up and within its memory bound,
// never send a scanner more bytes than it received from it, answer no
// faster than the per-source limit, relay nothing of the scanners
// upstream but REGISTERs within the failure limit, and report each
// scanner as a security.scan violation that reaches the platform.
func TestScanners(t *testing.T) {
	needSipvicious(t)
	bin := buildAgent(t)
	dir := t.TempDir()
	broker := synctest.StartBroker(t)
	edge := newScanEdge(t)
	port := freePort(t)
	config := filepath.Join(dir, "agent.yaml")
	writeFile(t, config, fmt.Sprintf(`device_id: pbx-e2e
data_dir: %s
lines: ["+15551230001"]
default_country: "1"
sip:
  listen: ["udp://127.0.0.1:%d"]
  upstream: "udp://127.0.0.1:%d"
  identity: off
policy:
  security:
    requests_per_s: %d
    burst: %d
    trusted_networks: ["127.0.0.1/32"]
    max_auth_failures: %d
    penalty_s: 60
    report_interval_s: 2
mqtt:
  brokers: [%q]
  status_interval_s: 5
api: {socket: %s}
`, filepath.Join(dir, "data"), port, edge.port, scanRate, scanBurst, scanMaxFailures, broker.URL(), filepath.Join(dir, "api.sock")))
	agent := startLogged(t, dir, "agent", bin, "run", "--config", config)
	waitListening(t, agent, "agent", "udp", port)

	// The thing is there: a trusted source's call reaches the edge, and
	// the same call from an untrusted address does not.
	pollUntil(t, 10*time.Second, "a trusted INVITE answered by the edge", func() bool {
		return rawExchange(t, "127.0.0.1", port, "INVITE", fmt.Sprintf("trusted-%d", time.Now().UnixNano())) == 486
	})
	if got := rawExchange(t, "127.0.0.9", port, "INVITE", "untrusted-1"); got != 403 {
		t.Fatalf("INVITE from an untrusted address answered %d, want 403 from the agent", got)
	}

	type scan struct {
		name, from string
		args       []string
		register   bool // its requests are REGISTERs, which may reach the edge
	}
	scans := []scan{
		{"svmap", "127.0.0.2", []string{"svmap", "-p", "%d", "127.0.0.1"}, false},
		{"svmap-invite", "127.0.0.3", []string{"svmap", "-m", "INVITE", "-p", "%d", "127.0.0.1"}, false},
		{"svwar-register", "127.0.0.4", []string{"svwar", "-m", "REGISTER", "--force", "-e", "100-399", "--maximumtime", "2", "-p", "%d", "127.0.0.1"}, true},
		{"svwar-invite", "127.0.0.5", []string{"svwar", "-m", "INVITE", "--force", "-e", "100-399", "--maximumtime", "2", "-p", "%d", "127.0.0.1"}, false},
		{"svcrack", "127.0.0.6", []string{"svcrack", "-u", "100", "-r", "1000-1100", "--maximumtime", "2", "-p", "%d", "127.0.0.1"}, true},
	}
	relays := map[string]*udpRelay{}
	for _, s := range scans {
		r := newUDPRelay(t, s.from, port)
		relays[s.name] = r
		args := make([]string, len(s.args))
		for i, a := range s.args {
			if a == "%d" {
				a = strconv.Itoa(r.port())
			}
			args[i] = a
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		start := time.Now()
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		in, sent, answers, packets, span := r.counts()
		t.Logf("%s from %s: %.1f s, exit %v; relay: %d bytes to the agent, %d back in %d packets, %d distinct answers over %.1f s; edge got %v",
			s.name, s.from, time.Since(start).Seconds(), err, in, sent, packets, answers, span.Seconds(), edge.from(s.from))
		if timedOut {
			t.Errorf("%s did not finish within 60 s:\n%s", s.name, out)
		}
		if agent.exited() {
			dumpFiles(t, dir, "agent.log")
			t.Fatalf("the agent exited during %s: %v", s.name, agent.err)
		}
		if in == 0 {
			t.Errorf("%s sent nothing: %s", s.name, out)
		}
		if sent > in {
			t.Errorf("%s: the agent sent %d bytes to %s, which sent it %d", s.name, sent, s.from, in)
		}
		// No faster than the bucket: its burst, then its rate.
		if limit := scanBurst + int(scanRate*span.Seconds()) + 1; answers > limit {
			t.Errorf("%s: %d distinct answers in %.1f s, more than the limit allows (%d)", s.name, answers, span.Seconds(), limit)
		}
		got := edge.from(s.from)
		for m, n := range got {
			if m != "REGISTER" || !s.register {
				t.Errorf("%s: the edge got %d %s from the scanner", s.name, n, m)
			}
		}
		if s.register {
			if n := got["REGISTER"]; n == 0 || n > scanMaxFailures+scanBurst {
				t.Errorf("%s: %d REGISTERs relayed, want 1 to %d (penalised after %d failures)", s.name, n, scanMaxFailures+scanBurst, scanMaxFailures)
			}
		}
	}

	// The agent's own count agrees with the relays'.
	var st struct {
		SIP struct {
			Security struct {
				Sources                            int
				Dropped, Refused, Penalised, Scans uint64
				BytesIn                            uint64 `json:"bytes_in"`
				BytesOut                           uint64 `json:"bytes_out"`
			}
		}
	}
	res, err := unixHTTPClient(filepath.Join(dir, "api.sock")).Get("http://agent/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(res.Body).Decode(&st)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	sec := st.SIP.Security
	t.Logf("agent's counters: %+v", sec)
	if sec.BytesOut > sec.BytesIn || sec.Dropped == 0 || sec.Refused == 0 || sec.Penalised == 0 {
		t.Errorf("agent's counters %+v: want bytes out <= in, and drops, refusals and a penalty", sec)
	}

	// Still serving, within its memory bound.
	if got := rawExchange(t, "127.0.0.1", port, "INVITE", "trusted-after"); got != 486 {
		t.Errorf("after the scans a trusted INVITE got %d, want the edge's 486", got)
	}
	rss, limit := peakRSS(t, agent.cmd.Process.Pid), int64(scanRSSLimit)
	if raceEnabled {
		limit *= 4 // the race detector's shadow memory: 17-19 MiB become 50-60
	}
	t.Logf("agent peak RSS %.1f MiB (limit %d MiB)", float64(rss)/(1<<20), limit>>20)
	if rss > limit {
		t.Errorf("agent peak RSS %d MiB, over %d MiB", rss>>20, limit>>20)
	}

	// Each scanner's report reaches the platform: masked, with its
	// counts and its tool's User-Agent.
	type rec struct {
		Rule     string
		Action   string
		Evidence struct {
			Source    string            `json:"source"`
			SourceID  string            `json:"source_id"`
			Reasons   []string          `json:"reasons"`
			Requests  int               `json:"requests"`
			Methods   map[string]uint64 `json:"methods"`
			ToUsers   int               `json:"to_users"`
			UserAgent string            `json:"user_agent"`
			BytesIn   uint64            `json:"bytes_in"`
			BytesOut  uint64            `json:"bytes_out"`
		}
	}
	var recs []rec
	pollUntil(t, 30*time.Second, "security.scan violations of every scanner at the broker", func() bool {
		broker.Got.Mu.Lock()
		defer broker.Got.Mu.Unlock()
		recs = recs[:0]
		ids := map[string]bool{}
		for _, m := range broker.Got.Msg["leadport/v1/dev/pbx-e2e/violation"] {
			for _, n := range []string{"127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9"} {
				if bytes.Contains(m, []byte(n)) {
					t.Fatalf("a violation batch names a whole address %s: %s", n, m)
				}
			}
			var batch struct{ Records []rec }
			if err := json.Unmarshal(m, &batch); err != nil {
				t.Fatalf("violation batch %s: %v", m, err)
			}
			for _, r := range batch.Records {
				if r.Rule == "security.scan" {
					recs = append(recs, r)
					ids[r.Evidence.SourceID] = true
				}
			}
		}
		return len(ids) >= len(scans)+1 // the scanners and the untrusted INVITE
	})
	tools, requests := 0, 0
	for _, r := range recs {
		e := r.Evidence
		if r.Action != "blocked" || e.Source != "127.0.0.0/24" || len(e.Reasons) == 0 || e.BytesOut > e.BytesIn {
			t.Errorf("security.scan record %+v: want blocked, source 127.0.0.0/24, reasons, bytes out <= in", r)
		}
		if e.UserAgent == "friendly-scanner" {
			tools++
		}
		requests += e.Requests
	}
	if tools == 0 {
		t.Errorf("no security.scan record names sipvicious's User-Agent: %+v", recs)
	}
	t.Logf("%d security.scan records, %d naming friendly-scanner, %d requests counted", len(recs), tools, requests)

	agent.stop(t, syscall.SIGTERM, 15*time.Second)
	if t.Failed() {
		dumpFiles(t, dir, "agent.log")
	}
}
