package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"

	lpsync "github.com/leadport/leadport-agent/sync"
)

type fakeSource struct {
	mu       gosync.Mutex
	consents []*store.Consent
	health   map[string]string
	fail     error
}

func (f *fakeSource) Status() lpsync.Status {
	return lpsync.Status{DeviceID: "pbx-0042", State: "running"}
}
func (f *fakeSource) Calls() []Call {
	return []Call{{CallID: "c1", Line: "+15551230001", Direction: "inbound", Remote: "+1212***0100", State: "confirmed"}}
}
func (f *fakeSource) Violations(limit int) []Violation {
	var out []Violation
	for i := 0; i < 5 && i < limit; i++ {
		out = append(out, Violation{Rule: "pacing", Action: "blocked"})
	}
	return out
}
func (f *fakeSource) AddConsent(_ context.Context, c *store.Consent) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return "", f.fail
	}
	f.consents = append(f.consents, c)
	return "01CONSENT", nil
}
func (f *fakeSource) Health() map[string]string { return f.health }

func (f *fakeSource) stored() []*store.Consent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*store.Consent(nil), f.consents...)
}

func newServer(src *fakeSource, accounts Accounts) *Server {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "leadport_test_total", Help: "a test counter"})
	c.Add(3)
	reg.MustRegister(c)
	return New(Options{Source: src, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Normalize: func(n string) (string, error) { return phone.Normalize(n, "1") }, ServiceUser: "leadport-agent", Accounts: accounts})
}

// served is a Server running as the agent runs it: Serve on a unix socket
// and a loopback port.
type served struct {
	sock, port string
	tcp, unix  *http.Client
}

// serve runs s until the test ends. The socket's directory and the socket
// itself are open to every user, so that tests can connect as others and
// meet the API's own checks rather than the file modes.
func serve(t *testing.T, s *Server) *served {
	t.Helper()
	dir, err := os.MkdirTemp("", "leadport-api-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sv := &served{sock: filepath.Join(dir, "api.sock"), tcp: &http.Client{Timeout: 5 * time.Second}}
	_, sv.port, _ = net.SplitHostPort(addr)
	sv.unix = unixClient(sv.sock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, sv.sock, addr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		ru, erru := sv.unix.Get("http://agent/healthz")
		rt, errt := sv.tcp.Get("http://" + addr + "/healthz")
		for _, r := range []*http.Response{ru, rt} {
			if r != nil {
				r.Body.Close()
			}
		}
		if erru == nil && errt == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("API not serving: socket %v, tcp %v", erru, errt)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.Chmod(sv.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	return sv
}

func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// req is one request of a table: over the socket or loopback TCP, with
// "PORT" in host and headers standing for the TCP listener's port.
type req struct {
	sock               bool
	method, path, body string
	host               string // default: the URL's
	hdr                map[string]string
}

func (sv *served) do(t *testing.T, q req) (int, string) {
	t.Helper()
	client, base := sv.tcp, "http://127.0.0.1:"+sv.port
	if q.sock {
		client, base = sv.unix, "http://agent"
	}
	r, err := http.NewRequest(q.method, base+q.path, strings.NewReader(q.body))
	if err != nil {
		t.Fatal(err)
	}
	if q.host != "" {
		r.Host = strings.ReplaceAll(q.host, "PORT", sv.port)
	}
	for k, v := range q.hdr {
		r.Header.Set(k, strings.ReplaceAll(v, "PORT", sv.port))
	}
	res, err := client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

var jsonType = map[string]string{"Content-Type": "application/json"}

const goodConsent = `{"subject":"(212) 555-0100","purpose":"sales-calls","method":"web","captured_at":"2026-11-01T10:00:00Z","evidence":"form-77","line":"+15551230001"}`

func TestEndpoints(t *testing.T) {
	src := &fakeSource{health: map[string]string{"store": "ok", "sip": "ok: not configured"}}
	sv := serve(t, newServer(src, osAccounts{}))
	tests := []struct {
		name     string
		req      req
		status   int
		contains string
	}{
		{"status", req{method: "GET", path: "/v1/status"}, 200, `"device_id": "pbx-0042"`},
		{"status over the socket", req{sock: true, method: "GET", path: "/v1/status"}, 200, `"device_id": "pbx-0042"`},
		{"calls", req{method: "GET", path: "/v1/calls"}, 200, `"remote": "+1212***0100"`},
		{"violations limited", req{method: "GET", path: "/v1/violations?limit=2"}, 200, `"rule": "pacing"`},
		{"violations bad limit", req{method: "GET", path: "/v1/violations?limit=0"}, 400, "limit: want an integer from 1 to 1000"},
		{"healthz", req{method: "GET", path: "/healthz"}, 200, `"ok": true`},
		{"metrics", req{method: "GET", path: "/metrics"}, 200, "leadport_test_total 3"},
		{"page", req{method: "GET", path: "/"}, 200, "<title>leadport-agent status</title>"},
		{"unknown path", req{method: "GET", path: "/v2/nothing"}, 404, ""},
		{"wrong method", req{sock: true, method: "DELETE", path: "/v1/status", hdr: jsonType}, 405, ""},

		// DNS rebinding: the page's own name, re-pointed at 127.0.0.1.
		{"rebinding GET", req{method: "GET", path: "/v1/status", host: "evil.example:PORT"}, 403, "is not this API's address"},
		{"rebinding POST", req{method: "POST", path: "/v1/consent", body: goodConsent, host: "evil.example:PORT", hdr: jsonType}, 403, "is not this API's address"},
		{"rebinding metrics", req{method: "GET", path: "/metrics", host: "evil.example:PORT"}, 403, "is not this API's address"},
		{"rebinding page", req{method: "GET", path: "/", host: "evil.example:PORT"}, 403, "is not this API's address"},
		{"loopback name on another port", req{method: "GET", path: "/v1/status", host: "127.0.0.1:1"}, 403, "is not this API's address"},
		{"no port", req{method: "GET", path: "/v1/status", host: "localhost"}, 403, "is not this API's address"},
		{"a subdomain of localhost", req{method: "GET", path: "/v1/status", host: "evil.localhost:PORT"}, 403, "is not this API's address"},
		{"localhost", req{method: "GET", path: "/v1/status", host: "localhost:PORT"}, 200, "pbx-0042"},
		{"LOCALHOST", req{method: "GET", path: "/v1/status", host: "LocalHost:PORT"}, 200, "pbx-0042"},
		{"IPv6 loopback", req{method: "GET", path: "/v1/status", host: "[::1]:PORT"}, 200, "pbx-0042"},
		// A browser cannot reach a unix socket: any Host will do there.
		{"socket with any host", req{sock: true, method: "GET", path: "/v1/status", host: "evil.example"}, 200, "pbx-0042"},

		// Over TCP the API is read-only, for root too.
		{"POST over TCP", req{method: "POST", path: "/v1/consent", body: goodConsent, hdr: jsonType}, 403, "read-only over TCP"},
		{"DELETE over TCP", req{method: "DELETE", path: "/v1/status"}, 403, "read-only over TCP"},
		{"preflight over TCP", req{method: "OPTIONS", path: "/v1/consent", hdr: map[string]string{"Origin": "http://127.0.0.1:PORT"}}, 403, "read-only over TCP"},

		{"text/plain", req{sock: true, method: "POST", path: "/v1/consent", body: goodConsent, hdr: map[string]string{"Content-Type": "text/plain"}}, 415, "application/json"},
		{"no content type", req{sock: true, method: "POST", path: "/v1/consent", body: goodConsent}, 415, "application/json"},
		{"form", req{sock: true, method: "POST", path: "/v1/consent", body: "subject=1", hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415, "application/json"},
		{"too large", req{sock: true, method: "POST", path: "/v1/consent", body: `{"evidence":"` + strings.Repeat("e", maxBody) + `"}`, hdr: jsonType}, 413, "too large"},

		{"another site's page", req{method: "GET", path: "/v1/status", hdr: map[string]string{"Origin": "https://evil.example"}}, 403, "another origin"},
		{"another site's page on the socket", req{sock: true, method: "POST", path: "/v1/consent", body: goodConsent, hdr: map[string]string{"Origin": "https://evil.example", "Content-Type": "application/json"}}, 403, "another origin"},
		{"cross-site without origin", req{method: "GET", path: "/v1/calls", hdr: map[string]string{"Sec-Fetch-Site": "cross-site"}}, 403, "cross-site"},
		{"another port of this host", req{method: "GET", path: "/v1/calls", hdr: map[string]string{"Sec-Fetch-Site": "same-site"}}, 403, "another port"},
		{"same origin", req{method: "GET", path: "/v1/status", hdr: map[string]string{"Origin": "http://127.0.0.1:PORT", "Sec-Fetch-Site": "same-origin"}}, 200, "pbx-0042"},
		{"typed address", req{method: "GET", path: "/", hdr: map[string]string{"Sec-Fetch-Site": "none"}}, 200, "<title>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := sv.do(t, tt.req)
			if status != tt.status || !strings.Contains(body, tt.contains) {
				t.Errorf("%s %s = %d %q, want %d containing %q", tt.req.method, tt.req.path, status, body, tt.status, tt.contains)
			}
		})
	}
	if _, body := sv.do(t, req{method: "GET", path: "/v1/violations?limit=2"}); strings.Count(body, `"rule"`) != 2 {
		t.Errorf("limit=2 gave %d violations", strings.Count(body, `"rule"`))
	}
	// Only the one good consent over the socket got through, the
	// refusals above did not.
	if n := len(src.stored()); n != 0 {
		t.Errorf("%d consents stored by refused requests", n)
	}
	if status, body := sv.do(t, req{sock: true, method: "POST", path: "/v1/consent", body: goodConsent, hdr: jsonType}); status != 201 {
		t.Errorf("the same consent over the socket as %d = %d %s, want 201", os.Getuid(), status, body)
	}
	if n := len(src.stored()); n != 1 {
		t.Errorf("%d consents stored, want 1", n)
	}
}

// TestHandlerWithoutServe: the handler served by another server (no peer
// credentials) still checks the Host and takes no changes.
func TestHandlerWithoutServe(t *testing.T) {
	src := &fakeSource{health: map[string]string{"store": "ok"}}
	srv := httptest.NewServer(newServer(src, osAccounts{}).Handler())
	defer srv.Close()
	r, _ := http.NewRequest("GET", srv.URL+"/v1/status", nil)
	r.Host = "evil.example"
	if res, err := http.DefaultClient.Do(r); err != nil || res.StatusCode != 403 {
		t.Errorf("rebinding GET: %v %v, want 403", res, err)
	}
	if res, err := http.Get(srv.URL + "/v1/status"); err != nil || res.StatusCode != 200 {
		t.Errorf("GET: %v %v, want 200", res, err)
	}
	if res, err := http.Post(srv.URL+"/v1/consent", "application/json", strings.NewReader(goodConsent)); err != nil || res.StatusCode != 403 {
		t.Errorf("POST: %v %v, want 403", res, err)
	}
	if len(src.stored()) != 0 {
		t.Error("a consent was stored")
	}
}

func TestHealthzDown(t *testing.T) {
	srv := httptest.NewServer(newServer(&fakeSource{health: map[string]string{"store": "ok", "sip": "listeners down: address in use"}}, nil).Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 503 || !strings.Contains(string(b), "listeners down") {
		t.Errorf("healthz = %d %s, want 503 naming the SIP listeners", res.StatusCode, b)
	}
}

// TestConsent: a good record is stored with who recorded it; a bad one
// gets 400 naming each bad field, and nothing is stored.
func TestConsent(t *testing.T) {
	src := &fakeSource{}
	sv := serve(t, newServer(src, osAccounts{}))
	post := func(body string) (int, string) {
		return sv.do(t, req{sock: true, method: "POST", path: "/v1/consent", body: body, hdr: jsonType})
	}
	status, body := post(goodConsent)
	if status != 201 || !strings.Contains(body, "01CONSENT") {
		t.Fatalf("good consent = %d %s", status, body)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	c := src.stored()[0]
	if c.Subject != "+12125550100" || c.State != "granted" || c.CapturedAt != time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC) || c.RecordedBy != me.Username {
		t.Errorf("stored %+v: want the subject normalised, state granted by default, the given time, recorded by %s", c, me.Username)
	}
	tests := []struct {
		name, body string
		fields     []string
	}{
		{"empty", `{}`, []string{"subject", "purpose", "method"}},
		{"bad values", `{"subject":"12","purpose":"x","state":"maybe","method":"telepathy","captured_at":"yesterday","line":"abc"}`,
			[]string{"subject", "state", "method", "captured_at", "line"}},
		{"future", `{"subject":"+12125550100","purpose":"x","method":"web","captured_at":"2099-01-01T00:00:00Z"}`, []string{"captured_at"}},
		{"evidence too long", `{"subject":"+12125550100","purpose":"x","method":"web","evidence":"` + strings.Repeat("e", 1025) + `"}`, []string{"evidence"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(tt.body)
			var res struct {
				Fields map[string]string `json:"fields"`
			}
			json.Unmarshal([]byte(body), &res)
			if status != 400 || len(res.Fields) != len(tt.fields) {
				t.Fatalf("= %d %s, want 400 naming %v", status, body, tt.fields)
			}
			for _, f := range tt.fields {
				if res.Fields[f] == "" {
					t.Errorf("no message for %s in %s", f, body)
				}
			}
		})
	}
	for _, field := range []string{"color", "recorded_by"} {
		body := fmt.Sprintf(`{"subject":"+12125550100","purpose":"x","method":"web",%q:"someone"}`, field)
		if status, res := post(body); status != 400 || !strings.Contains(res, field) {
			t.Errorf("field %s = %d %s, want 400 naming it", field, status, res)
		}
	}
	if n := len(src.stored()); n != 1 {
		t.Errorf("%d consents stored, want only the good one", n)
	}
	src.mu.Lock()
	src.fail = errors.New("disk full")
	src.mu.Unlock()
	if status, _ := post(goodConsent); status != 500 {
		t.Errorf("store failure = %d, want 500", status)
	}
}

// TestServeSocketFallback: a socket that cannot be made (its directory is
// a file) leaves the loopback listener serving; with no listener left,
// Serve fails.
func TestServeSocketFallback(t *testing.T) {
	dir := t.TempDir()
	blocker := dir + "/not-a-dir"
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := New(Options{Source: &fakeSource{health: map[string]string{"store": "ok"}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.Serve(context.Background(), blocker+"/api.sock", ""); err == nil {
		t.Fatal("Serve with only an impossible socket succeeded")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, blocker+"/api.sock", addr) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Errorf("healthz over TCP = %d", res.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TCP listener not serving: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
}
