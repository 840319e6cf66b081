//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
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
		"leadport_sip_upstream_up 1", "leadport_store_size_bytes"} {
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
	browser := ""
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(b); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		if os.Getenv("LEADPORT_E2E") == "1" {
			t.Fatal("chromium is not installed (scripts/setup.sh installs it)")
		}
		t.Skip("chromium is not installed")
	}
	r := newLocalRig(t)
	if status := r.forwardedCall(); status != 403 {
		t.Fatalf("forwarded call answered %d, want 403", status)
	}
	profile := filepath.Join(r.dir, "chromium")
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + profile, "--window-size=412,1400", "--virtual-time-budget=4000"}
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
		"pbx-local",            // the device
		"+15551230001",         // the line
		"udp://127.0.0.1:",     // the listeners
		"yes (200",             // the upstream answers
		"forwarding.diversion", // the last block
		"header=Diversion",     // and its evidence
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
