//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/internal/testcert"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// Real phones, a real registrar: Debian's baresip softphones and Debian's
// kamailio as a stock registrar with digest authentication (the Leadport
// edge, scripts/kamailio/registrar.cfg). Phones A and B are two lines of the
// device and register through the agent; phone C is someone else, registered
// straight with the edge. In both register modes:
//
//   - A calls C (outbound), holds and resumes (re-INVITEs), hangs up;
//   - C calls B (inbound), B answers by hand and hangs up;
//   - A calls B and gives up while it rings (CANCEL);
//   - B calls A (a hairpin: out on B's line, back in on A's), then tries a
//     blind transfer, which the agent refuses by default.
//
// Each completes as a user expects, and the store holds the usage records
// and violations that belong to them: one record per leg, a challenged
// INVITE and its retry one call, the refused REFER one violation.
func TestRealPhones(t *testing.T) {
	baresip := synctest.NeedBinary(t, "baresip")
	mods := baresipModules(t)
	kamailio := synctest.NeedBinary(t, "kamailio")
	bin := buildAgent(t)
	for _, mode := range []string{"path", "contact"} {
		t.Run(mode, func(t *testing.T) {
			testRealPhones(t, bin, baresip, mods, kamailio, mode)
		})
	}
}

const (
	lineA = "+15551230001"
	lineB = "+15551230002"
	other = "+12125550100"
	realm = "leadport.test"
)

func testRealPhones(t *testing.T, bin, baresip, mods, kamailio, mode string) {
	dir := t.TempDir()
	edgePort, localPort, upPort := freePort(t), freePort(t), freePort(t)

	cfgPath, err := filepath.Abs(filepath.Join("..", "..", "..", "scripts", "kamailio", "registrar.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	edge := startLogged(t, dir, "kamailio", kamailio, "-DD", "-E", "-f", cfgPath,
		"-P", filepath.Join(dir, "kamailio.pid"), "-Y", dir,
		"-A", "SIP_PORT="+strconv.Itoa(edgePort), "-A", `PASSWORD="s3cret"`, "-A", `REALM="`+realm+`"`)
	t.Cleanup(func() { edge.stop(t, syscall.SIGTERM, 10*time.Second) })
	waitListening(t, edge, "kamailio", "udp", edgePort)

	// One certificate for 127.0.0.1, its own CA: the agent's TLS listener
	// and the phones' (baresip listens for TLS too, and the agent connects
	// to it for calls to a TLS phone), each trusting the other through it.
	tlsPort := freePort(t)
	cert, key := writeTestCert(t, dir)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(dir, "api.sock")
	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, fmt.Sprintf(`data_dir: %s
lines: [%q, %q]
default_country: "1"
api: {socket: %s}
sip:
  listen: ["udp://127.0.0.1:%d", "tcp://127.0.0.1:%d", "tls://127.0.0.1:%d"]
  upstream_listen: ["udp://127.0.0.1:%d"]
  upstream: "udp://127.0.0.1:%d"
  register_mode: %s
  tls: {cert_file: %s, key_file: %s, ca_file: %s}
`, data, lineA, lineB, socket, localPort, localPort, tlsPort, upPort, edgePort, mode, cert, key, cert))
	agent := startLogged(t, dir, "agent", bin, "run", "--config", cfg)
	waitListening(t, agent, "leadport-agent", "udp", localPort)
	waitListening(t, agent, "leadport-agent", "tcp", localPort)
	waitListening(t, agent, "leadport-agent", "udp", upPort)

	// A on UDP (path mode) or TLS (contact mode), B on TCP towards the
	// agent; C is elsewhere.
	aPort, aTransport := localPort, "udp"
	if mode == "contact" {
		aPort, aTransport = tlsPort, "tls"
	}
	a := startPhone(t, dir, baresip, mods, "phone-a", lineA, aPort, aTransport, "auto")
	b := startPhone(t, dir, baresip, mods, "phone-b", lineB, localPort, "tcp", "manual")
	c := startPhone(t, dir, baresip, mods, "phone-c", other, edgePort, "udp", "auto")
	for _, p := range []*softphone{a, b, c} {
		p.awaitRegistered(t)
	}
	edgeLog := func() string { b, _ := os.ReadFile(edge.log); return string(b) }
	for _, l := range []string{lineA, lineB} {
		reg := lastMatching(edgeLog(), "edge: REGISTER", "user "+l+" ")
		switch mode {
		case "path":
			if !strings.Contains(reg, "path <<sip:127.0.0.1:"+strconv.Itoa(upPort)) || !strings.Contains(reg, "supported <path>") {
				t.Errorf("path mode: the edge got %q; want a Path naming the agent and Supported: path", reg)
			}
		case "contact":
			if !strings.Contains(reg, "path <<null>>") || !strings.Contains(reg, "@127.0.0.1:"+strconv.Itoa(upPort)) {
				t.Errorf("contact mode: the edge got %q; want no Path and a contact at the agent", reg)
			}
		}
	}
	var st struct {
		SIP struct {
			Register struct {
				Mode         string `json:"mode"`
				LinesFailing []any  `json:"lines_failing"`
			} `json:"register"`
		} `json:"sip"`
	}
	apiGet(t, socket, "/v1/status", &st)
	if st.SIP.Register.Mode != mode || len(st.SIP.Register.LinesFailing) != 0 {
		t.Errorf("status sip.register = %+v; want mode %s and no line failing", st.SIP.Register, mode)
	}

	// What a technician's doctor says of this registrar and these phones:
	// the stock registrar challenges first, and the running agent sees
	// every line registered.
	doc, _ := exec.Command(bin, "doctor", "--config", cfg).CombinedOutput()
	wantDoc := []string{"the running agent registers phones in " + mode + " mode, no line failing"}
	if mode == "path" {
		wantDoc = append(wantDoc, "the registrar answers REGISTER (401, it asks for credentials first)")
	}
	for _, want := range wantDoc {
		if !strings.Contains(string(doc), want) {
			t.Errorf("doctor lacks %q:\n%s", want, doc)
		}
	}

	// 1. Outbound: A calls C; hold and resume; A hangs up.
	mark := a.mark()
	a.cmd(t, "dial", "sip:"+other+"@"+realm)
	out := a.await(t, "CALL_ESTABLISHED", "", mark)
	c.await(t, "CALL_ESTABLISHED", out.ID, 0)
	a.await(t, "CALL_RTPESTAB", out.ID, mark)
	wantCalls(t, socket, leg{lineA, "outbound", "confirmed"})
	answered := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for countMatching(edgeLog(), "edge: reply 200 ", "to INVITE call-id "+out.ID) < n {
			if time.Now().After(deadline) {
				dumpFiles(t, dir, "kamailio.log", "agent.log", "phone-a.log")
				t.Fatalf("the %s was not answered 200 at the edge", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	a.cmd(t, "hold", "")
	answered(2, "hold re-INVITE")
	a.cmd(t, "resume", "")
	answered(3, "resume re-INVITE")
	markC := c.mark()
	a.cmd(t, "hangup", "")
	c.await(t, "CALL_CLOSED", out.ID, markC)
	// The edge challenged the INVITE (407) and took the retry: two
	// initial INVITEs with one Call-ID, then the two re-INVITEs.
	if n := strings.Count(edgeLog(), "edge: INVITE sip:"+other); n < 2 {
		t.Errorf("the edge saw %d initial INVITEs for the outbound call; want the challenged one and its retry", n)
	}

	// 2. Inbound: C calls B, B answers by hand and hangs up.
	mark, markC = b.mark(), c.mark()
	c.cmd(t, "dial", "sip:"+lineB+"@"+realm)
	in := b.await(t, "CALL_INCOMING", "", mark)
	wantCalls(t, socket, leg{lineB, "inbound", "early"})
	b.cmd(t, "accept", "")
	b.await(t, "CALL_ESTABLISHED", in.ID, mark)
	c.await(t, "CALL_ESTABLISHED", in.ID, markC)
	b.cmd(t, "hangup", "")
	c.await(t, "CALL_CLOSED", in.ID, markC)

	// 3. A calls B and gives up while B rings.
	mark, markB := a.mark(), b.mark()
	a.cmd(t, "dial", "sip:"+lineB+"@"+realm)
	ringing := b.await(t, "CALL_INCOMING", "", markB)
	wantCalls(t, socket, leg{lineA, "outbound", "early"}, leg{lineB, "inbound", "early"})
	a.cmd(t, "hangup", "")
	b.await(t, "CALL_CLOSED", ringing.ID, markB)
	wantCalls(t, socket)

	// 4. Hairpin: B calls A, A answers; B tries a blind transfer to C.
	mark, markB = a.mark(), b.mark()
	b.cmd(t, "dial", "sip:"+lineA+"@"+realm)
	hp := b.await(t, "CALL_ESTABLISHED", "", markB)
	a.await(t, "CALL_ESTABLISHED", hp.ID, mark)
	wantCalls(t, socket, leg{lineB, "outbound", "confirmed"}, leg{lineA, "inbound", "confirmed"})
	b.cmd(t, "transfer", "sip:"+other+"@"+realm)
	if ev := b.await(t, "TRANSFER_FAILED", hp.ID, markB); !strings.HasPrefix(ev.Param, "403") {
		t.Errorf("transfer: %q; want the agent's 403", ev.Param)
	}
	if !b.has("CALL_CLOSED", hp.ID, markB) {
		b.cmd(t, "hangup", "")
	}
	a.await(t, "CALL_CLOSED", hp.ID, mark)
	pollUntil(t, 10*time.Second, "no call left at the agent", func() bool { return len(activeCalls(t, socket)) == 0 })

	agent.stop(t, syscall.SIGTERM, 15*time.Second)
	usage, violations := storedRecords(t, data)
	// Who hung up: A its outbound call (the caller), B the inbound one (the
	// callee), B its hairpin call (the caller on both legs).
	type rec struct{ line, dir, disp, endedBy string }
	want := map[string][]rec{
		out.ID:     {{lineA, "outbound", "answered", "caller"}},
		in.ID:      {{lineB, "inbound", "answered", "callee"}},
		ringing.ID: {{lineA, "outbound", "cancelled", ""}, {lineB, "inbound", "cancelled", ""}},
		hp.ID:      {{lineB, "outbound", "answered", "caller"}, {lineA, "inbound", "answered", "caller"}},
	}
	got := map[string][]rec{}
	for _, u := range usage {
		got[u.CallID] = append(got[u.CallID], rec{u.Line, u.Direction, u.Disposition, u.EndedBy})
		if u.Hairpin != (u.Direction == "inbound" && (u.CallID == ringing.ID || u.CallID == hp.ID)) {
			t.Errorf("usage %s on %s %s: hairpin %v", u.CallID, u.Line, u.Direction, u.Hairpin)
		}
	}
	for id, w := range want {
		g := got[id]
		slices.SortFunc(g, func(x, y rec) int { return strings.Compare(x.dir, y.dir) })
		slices.SortFunc(w, func(x, y rec) int { return strings.Compare(x.dir, y.dir) })
		if !slices.Equal(g, w) {
			t.Errorf("usage of call %s = %v; want %v", id, g, w)
		}
	}
	if len(usage) != 6 {
		t.Errorf("%d usage records, want 6 (one per leg)", len(usage))
	}
	var rules []string
	for _, v := range violations {
		rules = append(rules, v.Rule+"@"+v.Line)
	}
	if !slices.Equal(rules, []string{"forwarding.refer@" + lineB}) {
		t.Errorf("violations %v; want the refused transfer on line B alone", rules)
	}
}

// baresipModules finds the directory of baresip's modules with the ones the
// test needs: ctrl_tcp to drive the phone, aufile for audio from a file.
func baresipModules(t *testing.T) string {
	t.Helper()
	for _, d := range []string{"/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules"} {
		if _, err := os.Stat(filepath.Join(d, "ctrl_tcp.so")); err == nil {
			return d
		}
	}
	if os.Getenv("LEADPORT_E2E") == "1" {
		t.Fatal("baresip's modules (ctrl_tcp, aufile) are not installed (Debian package baresip-core; scripts/setup.sh installs it)")
	}
	t.Skip("baresip's modules are not installed")
	return ""
}

// phone is a baresip process driven through its ctrl_tcp module: commands
// as JSON netstrings, events back on the same connection.
type softphone struct {
	name      string
	transport string // UDP, TCP, TLS
	proc      *proc
	conn      net.Conn
	mu        sync.Mutex
	evs       []phoneEvent
	res       chan phoneEvent
}

type phoneEvent struct {
	Event    bool   `json:"event"`
	Response bool   `json:"response"`
	OK       bool   `json:"ok"`
	Data     string `json:"data"`
	Type     string `json:"type"`
	ID       string `json:"id"`
	Param    string `json:"param"`
	Peer     string `json:"peeruri"`
}

func startPhone(t *testing.T, dir, baresip, mods, name, user string, proxyPort int, transport, answer string) *softphone {
	t.Helper()
	home := filepath.Join(dir, name)
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	sipPort, ctlPort := phonePort(t), freePort(t)
	wav := filepath.Join(dir, "tone.wav")
	if _, err := os.Stat(wav); err != nil {
		writeTone(t, wav)
	}
	writeFile(t, filepath.Join(home, "config"), fmt.Sprintf(`sip_listen 127.0.0.1:%d
sip_certificate %s
sip_cafile %s
audio_source aufile,%s
audio_player aubridge,%s
audio_alert aubridge,%s
module_path %s
module g711.so
module aufile.so
module aubridge.so
module account.so
module ctrl_tcp.so
module_app menu.so
ctrl_tcp_listen 127.0.0.1:%d
`, sipPort, filepath.Join(dir, "cert-and-key.pem"), filepath.Join(dir, "cert.pem"), wav, name, name, mods, ctlPort))
	writeFile(t, filepath.Join(home, "accounts"), fmt.Sprintf(
		"<sip:%s@%s>;auth_pass=s3cret;outbound=\"sip:127.0.0.1:%d;transport=%s\";regint=60;answermode=%s;audio_codecs=PCMU\n",
		user, realm, proxyPort, transport, answer))
	p := &softphone{name: name, transport: strings.ToUpper(transport), res: make(chan phoneEvent, 4)}
	p.proc = startLogged(t, dir, name, baresip, "-s", "-f", home)
	t.Cleanup(func() {
		if !p.proc.exited() {
			p.proc.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.proc.done:
			case <-time.After(5 * time.Second):
			}
		}
	})
	waitListening(t, p.proc, name, "tcp", ctlPort)
	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ctlPort)))
	if err != nil {
		t.Fatal(err)
	}
	p.conn = conn
	t.Cleanup(func() { conn.Close() })
	go p.read(bufio.NewReader(conn))
	return p
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 (its own
// CA) and its key as PEM files in dir, and both in one file as baresip
// takes them; it returns the certificate's and the key's paths.
func writeTestCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	c := testcert.New(t, "127.0.0.1", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	certFile, keyFile = c.Write(t, dir, "cert")
	writeFile(t, filepath.Join(dir, "cert-and-key.pem"), string(c.CertPEM)+string(c.KeyPEM))
	return certFile, keyFile
}

// phonePort is a port free for baresip's SIP sockets: it listens for TLS
// on the next port up, too.
func phonePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		p := freePort(t)
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no pair of free ports for a phone")
	return 0
}

// read parses the netstrings ("len:json,") of the control connection.
func (p *softphone) read(r *bufio.Reader) {
	for {
		n, err := r.ReadString(':')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(n[:len(n)-1])
		if err != nil || size > 1<<20 {
			return
		}
		b := make([]byte, size+1)
		if _, err := io.ReadFull(r, b); err != nil {
			return
		}
		var ev phoneEvent
		if json.Unmarshal(b[:size], &ev) != nil {
			continue
		}
		if ev.Response {
			p.res <- ev
			continue
		}
		p.mu.Lock()
		p.evs = append(p.evs, ev)
		p.mu.Unlock()
	}
}

// cmd runs a menu command ("dial", "hangup", "accept", "hold", "resume",
// "transfer") and fails the test when baresip refuses it.
func (p *softphone) cmd(t *testing.T, command, params string) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"command": command, "params": params, "token": command})
	if _, err := fmt.Fprintf(p.conn, "%d:%s,", len(b), b); err != nil {
		t.Fatalf("%s: %s: %v", p.name, command, err)
	}
	select {
	case res := <-p.res:
		if !res.OK {
			t.Fatalf("%s: %s %s: %q", p.name, command, params, res.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer to %s", p.name, command)
	}
}

// mark is where events from now on start, for await and has.
func (p *softphone) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.evs)
}

func (p *softphone) find(typ, id string, from int) (phoneEvent, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range p.evs[from:] {
		if ev.Type == typ && (id == "" || ev.ID == id) {
			return ev, true
		}
	}
	return phoneEvent{}, false
}

func (p *softphone) has(typ, id string, from int) bool {
	_, ok := p.find(typ, id, from)
	return ok
}

// await waits for an event of the type (of call id, when given) at or
// after the mark.
func (p *softphone) await(t *testing.T, typ, id string, from int) phoneEvent {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ev, ok := p.find(typ, id, from); ok {
			return ev
		}
		if time.Now().After(deadline) || p.proc.exited() {
			p.mu.Lock()
			var seen []string
			for _, ev := range p.evs[from:] {
				seen = append(seen, ev.Type+" "+ev.Param)
			}
			p.mu.Unlock()
			dumpFiles(t, filepath.Dir(p.proc.log), "agent.log", "kamailio.log", filepath.Base(p.proc.log))
			t.Fatalf("%s: no %s (call %q) within 15 s; events since: %q", p.name, typ, id, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitRegistered waits for the phone's registration over its transport to
// be answered 200,
// which baresip logs (its REGISTER_OK event may come before the control
// connection is up).
func (p *softphone) awaitRegistered(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(p.proc.log)
		if strings.Contains(string(b), "{0/"+p.transport+"/v4} 200 OK (") {
			return
		}
		if time.Now().After(deadline) || p.proc.exited() {
			dumpFiles(t, filepath.Dir(p.proc.log), "agent.log", "kamailio.log", filepath.Base(p.proc.log))
			t.Fatalf("%s did not register within 15 s", p.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeTone writes 20 s of a 440 Hz tone, 8 kHz mono 16-bit WAV: what
// the phones send as their voice.
func writeTone(t *testing.T, path string) {
	t.Helper()
	const rate, secs = 8000, 20
	n := rate * secs
	b := make([]byte, 44+2*n)
	le := func(off int, v uint32, size int) {
		for i := range size {
			b[off+i] = byte(v >> (8 * i))
		}
	}
	copy(b, "RIFF")
	le(4, uint32(36+2*n), 4)
	copy(b[8:], "WAVEfmt ")
	le(16, 16, 4)
	le(20, 1, 2)
	le(22, 1, 2)
	le(24, rate, 4)
	le(28, 2*rate, 4)
	le(32, 2, 2)
	le(34, 16, 2)
	copy(b[36:], "data")
	le(40, uint32(2*n), 4)
	for i := range n {
		// A triangle wave: no math import for a test tone.
		ph := i % 18
		v := int16((ph - 9) * 3000)
		le(44+2*i, uint32(uint16(v)), 2)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func countMatching(log string, parts ...string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			n++
		}
	}
	return n
}

func lastMatching(log string, parts ...string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(lines[i], p)
		}
		if ok {
			return lines[i]
		}
	}
	return ""
}

func apiGet(t *testing.T, socket, path string, v any) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}
	res, err := c.Get("http://localhost" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

type leg struct{ line, dir, state string }

func activeCalls(t *testing.T, socket string) []leg {
	t.Helper()
	var doc struct {
		Calls []struct {
			Line      string `json:"line"`
			Direction string `json:"direction"`
			State     string `json:"state"`
		} `json:"calls"`
	}
	apiGet(t, socket, "/v1/calls", &doc)
	var out []leg
	for _, c := range doc.Calls {
		out = append(out, leg{c.Line, c.Direction, c.State})
	}
	slices.SortFunc(out, func(a, b leg) int { return strings.Compare(a.line+a.dir, b.line+b.dir) })
	return out
}

// wantCalls polls /v1/calls until it shows exactly these legs.
func wantCalls(t *testing.T, socket string, want ...leg) {
	t.Helper()
	slices.SortFunc(want, func(a, b leg) int { return strings.Compare(a.line+a.dir, b.line+b.dir) })
	var got []leg
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = activeCalls(t, socket)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/v1/calls = %v; want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func storedRecords(t *testing.T, data string) ([]*store.Usage, []*store.Violation) {
	t.Helper()
	st, err := store.Open(store.Options{Dir: data, DefaultCountry: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var usage []*store.Usage
	var violations []*store.Violation
	for _, typ := range []store.Type{store.TypeUsage, store.TypeViolation} {
		recs, err := st.Pending(typ, store.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			p, err := r.Decode()
			if err != nil {
				t.Fatal(err)
			}
			switch v := p.(type) {
			case *store.Usage:
				usage = append(usage, v)
			case *store.Violation:
				violations = append(violations, v)
			}
		}
	}
	return usage, violations
}
