//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/store"
)

// localRig is the real binary with its local API on a unix socket and a
// loopback port, a SIP upstream that answers OPTIONS (sipgo), and a
// phone-side sipgo client.
type localRig struct {
	t       *testing.T
	bin     string
	dir     string
	config  string
	socket  string
	httpURL string
	sipPort int
	agent   *proc
}

func newLocalRig(t *testing.T) *localRig {
	r := &localRig{t: t, bin: buildAgent(t), dir: t.TempDir()}
	r.socket = filepath.Join(r.dir, "api.sock")
	apiPort := freePort(t)
	r.httpURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	r.sipPort = freePort(t)
	upPort := freePort(t)
	r.edge(upPort)
	r.config = filepath.Join(r.dir, "agent.yaml")
	writeFile(t, r.config, fmt.Sprintf(`device_id: pbx-local
data_dir: %s
lines: ["+15551230001"]
default_country: "1"
sip:
  listen: ["udp://127.0.0.1:%d"]
  upstream: "udp://127.0.0.1:%d"
api:
  socket: %s
  listen: "127.0.0.1:%d"
log: {level: debug}
`, filepath.Join(r.dir, "data"), r.sipPort, upPort, r.socket, apiPort))
	r.agent = startLogged(t, r.dir, "agent", r.bin, "run", "--config", r.config)
	pollUntil(t, 20*time.Second, "the local API and an upstream check", func() bool {
		out, err := exec.Command(r.bin, "status", "--json", "--socket", r.socket).Output()
		return err == nil && bytes.Contains(out, []byte(`"answers": true`))
	})
	return r
}

// edge answers OPTIONS on port, as the Leadport edge would.
func (r *localRig) edge(port int) {
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("edge"))
	if err != nil {
		r.t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		r.t.Fatal(err)
	}
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ListenAndServe(ctx, "udp", fmt.Sprintf("127.0.0.1:%d", port))
	r.t.Cleanup(func() { cancel(); ua.Close() })
}

// forwardedCall sends an INVITE that says it was diverted from the line:
// the agent refuses it (forwarding.diversion).
func (r *localRig) forwardedCall() int {
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("pbx"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer ua.Close()
	cli, err := sipgo.NewClient(ua)
	if err != nil {
		r.t.Fatal(err)
	}
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "+13125550199", Host: "127.0.0.1", Port: r.sipPort})
	req.AppendHeader(sip.NewHeader("Diversion", "<sip:+15551230001@pbx.example>;reason=unconditional"))
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+12125550100", Host: "pbx.example"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.SetBody([]byte("v=0\r\n"))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cli.Do(ctx, req)
	if err != nil {
		r.t.Fatalf("INVITE: %v", err)
	}
	return res.StatusCode
}

func (r *localRig) cli(args ...string) (string, error) {
	cmd := exec.Command(r.bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestLocalAPI: status, consent, metrics and health of the running binary
// through its socket and its loopback port, as a technician uses them.
func TestLocalAPI(t *testing.T) {
	r := newLocalRig(t)
	if status := r.forwardedCall(); status != 403 {
		t.Fatalf("forwarded call answered %d, want 403", status)
	}
	out, err := r.cli("status", "--socket", r.socket)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"on pbx-local: OK", "answers (200", "+15551230001", "blocked", "forwarding.diversion"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "+12125550100") || strings.Contains(out, "+13125550199") {
		t.Errorf("status shows a whole number of a caller or callee:\n%s", out)
	}
	out, err = r.cli("consent", "add", "--socket", r.socket, "--subject", "+12125550100", "--purpose", "sales-calls", "--method", "verbal")
	if err != nil || !strings.Contains(out, "consent recorded: ") {
		t.Fatalf("consent add: %v\n%s", err, out)
	}
	out, err = r.cli("consent", "add", "--socket", r.socket, "--subject", "12", "--purpose", "x", "--method", "smoke")
	if err == nil || !strings.Contains(out, "--subject:") || !strings.Contains(out, "--method:") {
		t.Errorf("bad consent: %v\n%s; want an error naming --subject and --method", err, out)
	}
	res, err := http.Get(r.httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	metrics.ReadFrom(res.Body)
	res.Body.Close()
	for _, want := range []string{`leadport_rules_blocks_total{rule="forwarding.diversion"} 1`, `leadport_outbox_pending{type="consent"} 1`,
		"leadport_sip_upstream_up 1", "leadport_store_size_bytes", `leadport_sip_refused_total{reason="unanswered"} 0`, "leadport_sip_unanswered 0",
		"leadport_sip_retransmissions_answered_total 0", "leadport_sip_byes_held 0", "leadport_sip_requests_waiting 0"} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	req, _ := http.NewRequest("GET", r.httpURL+"/v1/status", nil)
	req.Header.Set("Origin", "https://evil.example")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 403 {
		t.Errorf("request from another origin: %v %v, want 403", res, err)
	}
	fi, err := os.Stat(r.socket)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v (%v), want 0660", fi, err)
	}
	r.agent.stop(t, syscall.SIGTERM, 15*time.Second)
	if _, err := os.Stat(r.socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind after a clean stop: %v", err)
	}
}

// TestStatusPage drives headless Chromium (Debian's) against the running
// agent and checks what the page shows after its script ran; with
// LEADPORT_SCREENSHOT=file.png it also writes a screenshot (make
// screenshot).
func TestStatusPage(t *testing.T) {
	browser := needChromium(t)
	r := newLocalRig(t)
	if status := r.forwardedCall(); status != 403 {
		t.Fatalf("forwarded call answered %d, want 403", status)
	}
	args := chromiumArgs(filepath.Join(r.dir, "chromium"))
	dom := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, browser, append(args, "--dump-dom", r.httpURL+"/")...).Output()
		if err != nil {
			t.Fatalf("chromium --dump-dom: %v", err)
		}
		return string(out)
	}
	page := dom()
	for _, want := range []string{
		`<span id="health" data-testid="health" class="ok">OK</span>`, // health at a glance
		"pbx-local",                  // the device
		"+15551230001",               // the line
		"udp://127.0.0.1:",           // the listeners
		"yes (200",                   // the upstream answers
		"path mode, no line failing", // registrations
		"forwarding.diversion",       // the last block
		"header=Diversion",           // and its evidence
		"none configured: records wait in the store", // the broker
		"pending usage", // the backlog
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, "+12125550100") {
		t.Error("the page shows a caller's whole number")
	}
	if path := os.Getenv("LEADPORT_SCREENSHOT"); path != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		abs, _ := filepath.Abs(path)
		cmd := exec.CommandContext(ctx, browser, append(args, "--screenshot="+abs, r.httpURL+"/")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("screenshot: %v\n%s", err, out)
		}
		if fi, err := os.Stat(abs); err != nil || fi.Size() < 1000 {
			t.Fatalf("screenshot %s not written: %v", abs, err)
		}
		t.Logf("screenshot: %s", abs)
	}
	var st map[string]any
	out, _ := exec.Command(r.bin, "status", "--json", "--socket", r.socket).Output()
	if err := json.Unmarshal(out, &st); err != nil {
		t.Errorf("status --json: %v", err)
	}
}

// needChromium finds Debian's headless Chromium, or skips (fails under
// LEADPORT_E2E=1).
func needChromium(t *testing.T) string {
	t.Helper()
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(b); err == nil {
			return p
		}
	}
	if os.Getenv("LEADPORT_E2E") == "1" {
		t.Fatal("chromium is not installed (scripts/setup.sh installs it)")
	}
	t.Skip("chromium is not installed")
	return ""
}

func chromiumArgs(profile string, extra ...string) []string {
	return append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + profile, "--window-size=412,1400", "--virtual-time-budget=4000"}, extra...)
}

// pendingConsents is the consent backlog as the agent reports it over its
// socket.
func (r *localRig) pendingConsents() int {
	r.t.Helper()
	out, err := exec.Command(r.bin, "status", "--json", "--socket", r.socket).Output()
	if err != nil {
		r.t.Fatalf("status --json: %v", err)
	}
	var st struct {
		Status struct {
			Outbox map[string]struct {
				Pending int `json:"pending"`
			} `json:"outbox"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		r.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st.Status.Outbox["consent"].Pending
}

// consents stops the agent and reads the consent records from its store.
func (r *localRig) consents() []*store.Consent {
	t := r.t
	t.Helper()
	r.agent.stop(t, syscall.SIGTERM, 15*time.Second)
	s, err := store.Open(store.Options{Dir: filepath.Join(r.dir, "data")})
	if err != nil {
		t.Fatalf("open the agent's store: %v", err)
	}
	defer s.Close()
	recs, err := s.Pending(store.TypeConsent, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.Consent
	for _, rec := range recs {
		p, err := rec.Decode()
		if err != nil {
			t.Fatalf("record %s: %v", rec.ID, err)
		}
		out = append(out, p.(*store.Consent))
	}
	return out
}

const e2eConsent = `{"subject":"+12125550100","purpose":"sales-calls","method":"web"}`

// TestAPIHostRebinding: what a page that re-points its own name at
// 127.0.0.1 would send (DNS rebinding: same-origin to the browser, so no
// Origin header), and what other local users may do, against the real
// binary.
func TestAPIHostRebinding(t *testing.T) {
	r := newLocalRig(t)
	port := strings.TrimPrefix(r.httpURL, "http://127.0.0.1:")
	send := func(method, path, host, ctype string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, r.httpURL+path, strings.NewReader(e2eConsent))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		req.Header.Set("Sec-Fetch-Site", "same-origin") // what the browser says of a rebound page
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(res.Body)
		return res.StatusCode, b.String()
	}
	tests := []struct {
		method, path, host, ctype string
		status                    int
		contains                  string
	}{
		// The same requests with the listener's own names are answered:
		// the refusals below are the Host's doing.
		{"GET", "/v1/status", "127.0.0.1:" + port, "", 200, "pbx-local"},
		{"GET", "/v1/status", "localhost:" + port, "", 200, "pbx-local"},
		{"GET", "/v1/status", "[::1]:" + port, "", 200, "pbx-local"},
		{"GET", "/v1/status", "evil.example:" + port, "", 403, "not this API's address"},
		{"GET", "/v1/calls", "evil.example:" + port, "", 403, "not this API's address"},
		{"GET", "/metrics", "evil.example:" + port, "", 403, "not this API's address"},
		{"GET", "/", "evil.example:" + port, "", 403, "not this API's address"},
		{"POST", "/v1/consent", "evil.example:" + port, "application/json", 403, "not this API's address"},
		// Over TCP nothing changes state, whoever asks.
		{"POST", "/v1/consent", "127.0.0.1:" + port, "application/json", 403, "read-only over TCP"},
		{"POST", "/v1/consent", "127.0.0.1:" + port, "text/plain", 403, "read-only over TCP"},
	}
	for _, tt := range tests {
		status, body := send(tt.method, tt.path, tt.host, tt.ctype)
		if status != tt.status || !strings.Contains(body, tt.contains) {
			t.Errorf("%s %s Host %s (%s) = %d %s; want %d with %q", tt.method, tt.path, tt.host, tt.ctype, status, body, tt.status, tt.contains)
		}
	}
	if n := r.pendingConsents(); n != 0 {
		t.Fatalf("%d consents stored by refused requests", n)
	}

	// Over the socket: text/plain is refused, another user is refused,
	// root (this test) is not. The socket and its directory are opened
	// to everyone so that the API, not the file mode, decides.
	unixc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.socket)
		},
	}}
	res, err := unixc.Post("http://localhost/v1/consent", "text/plain", strings.NewReader(e2eConsent))
	if err != nil || res.StatusCode != 415 {
		t.Errorf("text/plain over the socket: %v %v, want 415", res, err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the CLI as another user (CI runs as root)")
	}
	for _, d := range []string{filepath.Dir(r.dir), r.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(r.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	add := []string{"consent", "add", "--socket", r.socket, "--subject", "+12125550100", "--purpose", "sales-calls", "--method", "verbal"}
	cmd := exec.Command(r.bin, add...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "may not change the agent's state") {
		t.Errorf("consent add as nobody: %v\n%s; want refused", err, out)
	}
	if n := r.pendingConsents(); n != 0 {
		t.Fatalf("%d consents stored after nobody's attempt", n)
	}
	if out, err := r.cli(add...); err != nil || !strings.Contains(out, "consent recorded: ") {
		t.Fatalf("consent add as root: %v\n%s", err, out)
	}
	if n := r.pendingConsents(); n != 1 {
		t.Errorf("%d consents pending after root's, want 1", n)
	}
	cs := r.consents()
	if len(cs) != 1 || cs[0].RecordedBy != "root" {
		t.Errorf("stored consents %+v, want one recorded by root", cs)
	}
}

// evilPage is another site's page. Its script tries the agent two ways
// and writes what it could see into the DOM: same-origin through its own
// name (DNS rebinding, simulated by a proxy that forwards the browser's
// request to the agent untouched, Host and all), and cross-origin
// straight to 127.0.0.1.
const evilPage = `<!doctype html>
<html><head><title>waiting</title></head><body><pre id="out"></pre><script>
const agent = "http://127.0.0.1:PORT";
const consent = JSON.stringify({subject: "+12125550100", purpose: "sales-calls", method: "web"});
const json = {"Content-Type": "application/json"}, text = {"Content-Type": "text/plain"};
const tries = [
  ["own", "/own", {}],
  ["rebind-get", "/v1/status", {}],
  ["rebind-post-json", "/v1/consent", {method: "POST", headers: json, body: consent}],
  ["rebind-post-text", "/v1/consent", {method: "POST", headers: text, body: consent}],
  ["cross-get", agent + "/v1/status", {}],
  ["cross-get-no-cors", agent + "/v1/status", {mode: "no-cors"}],
  ["cross-post-json", agent + "/v1/consent", {method: "POST", headers: json, body: consent}],
  ["cross-post-text", agent + "/v1/consent", {method: "POST", headers: text, body: consent}],
  ["cross-post-no-cors", agent + "/v1/consent", {method: "POST", mode: "no-cors", headers: text, body: consent}],
];
(async () => {
  const out = {};
  for (const [name, url, init] of tries) {
    try {
      const r = await fetch(url, init);
      out[name] = {type: r.type, status: r.status, body: (await r.text()).slice(0, 400)};
    } catch (e) {
      out[name] = {error: String(e)};
    }
  }
  document.getElementById("out").textContent = JSON.stringify(out);
  document.title = "done";
})();
</script></body></html>`

// TestAPIFromAnotherSite: headless Chromium opens another site's page
// that tries to read the agent's status and record a consent, through
// DNS rebinding and cross-origin, with and without CORS, as JSON and as
// text/plain. It reads nothing and records nothing; the agent's log shows
// the requests arrived and were refused.
func TestAPIFromAnotherSite(t *testing.T) {
	browser := needChromium(t)
	r := newLocalRig(t)
	port := strings.TrimPrefix(r.httpURL, "http://127.0.0.1:")
	agentURL, _ := url.Parse(r.httpURL)
	// The other site, on the agent's port of another loopback address:
	// Chromium resolves evil.example there, so the page and its
	// same-origin requests share the agent's port, as after a rebinding.
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(agentURL)
		pr.Out.Host = pr.In.Host
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, strings.ReplaceAll(evilPage, "PORT", port))
	})
	mux.HandleFunc("GET /own", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "evil-ok") })
	mux.Handle("/", proxy)
	l, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		t.Fatalf("the other site's listener: %v", err)
	}
	evil := &http.Server{Handler: mux}
	go evil.Serve(l)
	t.Cleanup(func() { evil.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := chromiumArgs(filepath.Join(r.dir, "chromium"), "--host-resolver-rules=MAP evil.example 127.0.0.2")
	page, err := exec.CommandContext(ctx, browser, append(args, "--dump-dom", "http://evil.example:"+port+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	m := regexp.MustCompile(`(?s)<pre id="out">(.*?)</pre>`).FindSubmatch(page)
	if m == nil || !bytes.Contains(page, []byte("<title>done</title>")) {
		t.Fatalf("the page's script did not finish:\n%s", page)
	}
	type outcome struct {
		Type, Body, Error string
		Status            int
	}
	var got map[string]outcome
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &got); err != nil {
		t.Fatalf("the page's findings: %v\n%s", err, m[1])
	}
	t.Logf("what the page saw: %s", html.UnescapeString(string(m[1])))
	// The page's own requests work: what fails below fails at the agent
	// or in the browser's CORS checks.
	if got["own"].Body != "evil-ok" {
		t.Fatalf("the page could not fetch from its own site: %+v", got["own"])
	}
	for name, o := range got {
		if strings.Contains(o.Body, "pbx-local") {
			t.Errorf("%s: the page read the agent's status: %+v", name, o)
		}
	}
	// Rebinding: same-origin, so the page sees the agent's answer, a 403.
	for _, name := range []string{"rebind-get", "rebind-post-json", "rebind-post-text"} {
		if o := got[name]; o.Status != 403 || !strings.Contains(o.Body, "not this API's address") {
			t.Errorf("%s = %+v, want the agent's 403 for the Host", name, o)
		}
	}
	// Cross-origin: the browser hides the answer or refuses the request.
	for _, name := range []string{"cross-get", "cross-post-json", "cross-post-text"} {
		if o := got[name]; o.Error == "" {
			t.Errorf("%s = %+v, want a failed fetch", name, o)
		}
	}
	for _, name := range []string{"cross-get-no-cors", "cross-post-no-cors"} {
		if o := got[name]; o.Type != "opaque" || o.Body != "" {
			t.Errorf("%s = %+v, want an opaque answer", name, o)
		}
	}
	if strings.Contains(string(page), "pbx-local") {
		t.Error("the page shows the agent's device id")
	}
	// The requests that a browser sends without asking first reached the
	// agent and were refused there.
	logText, err := os.ReadFile(r.agent.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`method=GET path=/v1/status host=evil.example:` + port,
		`method=POST path=/v1/consent host=evil.example:` + port,
		`method=POST path=/v1/consent host=127.0.0.1:` + port + ` origin=http://evil.example:` + port,
	} {
		if !strings.Contains(string(logText), "local API request refused") || !strings.Contains(string(logText), want) {
			t.Errorf("the agent's log has no refusal with %q", want)
		}
	}
	if n := r.pendingConsents(); n != 0 {
		t.Errorf("%d consents recorded from the page", n)
	}
	// The count can move: the CLI's consent shows up in it.
	if out, err := r.cli("consent", "add", "--socket", r.socket, "--subject", "+12125550100", "--purpose", "sales-calls", "--method", "web"); err != nil {
		t.Fatalf("consent add: %v\n%s", err, out)
	}
	if n := r.pendingConsents(); n != 1 {
		t.Errorf("%d consents pending after the CLI's, want 1", n)
	}
	// And the same browser reads the status on the agent's own page.
	own, err := exec.CommandContext(ctx, browser, append(args, "--dump-dom", r.httpURL+"/")...).Output()
	if err != nil || !bytes.Contains(own, []byte("pbx-local")) {
		t.Errorf("the agent's own page in the same browser does not show the device: %v", err)
	}
}
