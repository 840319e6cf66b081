package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
)

type fakeSource struct {
	consents []*store.Consent
	health   map[string]string
	fail     error
}

func (f *fakeSource) Status() map[string]any {
	return map[string]any{"device_id": "pbx-0042", "state": "running"}
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
	if f.fail != nil {
		return "", f.fail
	}
	f.consents = append(f.consents, c)
	return "01CONSENT", nil
}
func (f *fakeSource) Health() map[string]string { return f.health }

func newTestServer(src *fakeSource) *httptest.Server {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "leadport_test_total", Help: "a test counter"})
	c.Add(3)
	reg.MustRegister(c)
	s := New(Options{Source: src, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Normalize: func(n string) (string, error) { return phone.Normalize(n, "1") }})
	return httptest.NewServer(s.Handler())
}

func do(t *testing.T, method, url, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	src := &fakeSource{health: map[string]string{"store": "ok", "sip": "ok: not configured"}}
	srv := newTestServer(src)
	defer srv.Close()
	tests := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		contains                 string
	}{
		{"status", "GET", "/v1/status", "", nil, 200, `"device_id": "pbx-0042"`},
		{"calls", "GET", "/v1/calls", "", nil, 200, `"remote": "+1212***0100"`},
		{"violations limited", "GET", "/v1/violations?limit=2", "", nil, 200, `"rule": "pacing"`},
		{"violations bad limit", "GET", "/v1/violations?limit=0", "", nil, 400, "limit: want an integer from 1 to 1000"},
		{"healthz", "GET", "/healthz", "", nil, 200, `"ok": true`},
		{"metrics", "GET", "/metrics", "", nil, 200, "leadport_test_total 3"},
		{"page", "GET", "/", "", nil, 200, "<title>leadport-agent status</title>"},
		{"unknown path", "GET", "/v2/nothing", "", nil, 404, ""},
		{"wrong method", "DELETE", "/v1/status", "", nil, 405, ""},
		{"another site's page", "POST", "/v1/consent", `{}`, map[string]string{"Origin": "https://evil.example"}, 403, "another origin"},
		{"cross-site without origin", "GET", "/v1/calls", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "cross-site"},
		{"same origin", "GET", "/v1/status", "", map[string]string{"Origin": srv.URL}, 200, "pbx-0042"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, tt.method, srv.URL+tt.path, tt.body, tt.hdr)
			if status != tt.status || !strings.Contains(body, tt.contains) {
				t.Errorf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, status, body, tt.status, tt.contains)
			}
		})
	}
	if status, body := do(t, "GET", srv.URL+"/v1/violations?limit=2", "", nil); status == 200 && strings.Count(body, `"rule"`) != 2 {
		t.Errorf("limit=2 gave %d violations", strings.Count(body, `"rule"`))
	}
}

func TestHealthzDown(t *testing.T) {
	srv := newTestServer(&fakeSource{health: map[string]string{"store": "ok", "sip": "listeners down: address in use"}})
	defer srv.Close()
	status, body := do(t, "GET", srv.URL+"/healthz", "", nil)
	if status != 503 || !strings.Contains(body, "listeners down") {
		t.Errorf("healthz = %d %s, want 503 naming the SIP listeners", status, body)
	}
}

// TestConsent: a good record is stored; a bad one gets 400 naming each
// bad field, and nothing is stored.
func TestConsent(t *testing.T) {
	src := &fakeSource{}
	srv := newTestServer(src)
	defer srv.Close()
	good := `{"subject":"(212) 555-0100","purpose":"sales-calls","method":"web","captured_at":"2026-11-01T10:00:00Z","evidence":"form-77","line":"+15551230001"}`
	status, body := do(t, "POST", srv.URL+"/v1/consent", good, nil)
	if status != 201 || !strings.Contains(body, "01CONSENT") {
		t.Fatalf("good consent = %d %s", status, body)
	}
	c := src.consents[0]
	if c.Subject != "+12125550100" || c.State != "granted" || c.CapturedAt != time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC) {
		t.Errorf("stored %+v: want the subject normalised, state granted by default, the given time", c)
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
			status, body := do(t, "POST", srv.URL+"/v1/consent", tt.body, nil)
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
	if status, body := do(t, "POST", srv.URL+"/v1/consent", `{"subject":"+12125550100","purpose":"x","method":"web","color":"red"}`, nil); status != 400 || !strings.Contains(body, "color") {
		t.Errorf("unknown field = %d %s, want 400 naming it", status, body)
	}
	if len(src.consents) != 1 {
		t.Errorf("%d consents stored, want only the good one", len(src.consents))
	}
	src.fail = errors.New("disk full")
	if status, _ := do(t, "POST", srv.URL+"/v1/consent", good, nil); status != 500 {
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
