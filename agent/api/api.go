// Package api is the agent's local HTTP API, its status page and its
// metrics: what `leadport-agent status`, a technician's browser and
// Prometheus read on the device. It listens on a unix socket (mode 0660,
// the service's group) and, when configured, on a loopback TCP address.
//
// There are no passwords; the kernel is the authority, as in tailscale's
// local API. Reads are open on both listeners. Changes are accepted only
// over the socket, from peers whose credentials (SO_PEERCRED) name root,
// the agent's own user, the service user or a member of its group
// (peer.go), and are recorded as theirs. Over TCP a request must name the
// listener's loopback address as its Host, which defeats DNS rebinding,
// and requests a browser makes for another site are refused (guard.go).
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leadport/leadport-agent/store"

	lpsync "github.com/leadport/leadport-agent/sync"
)

// Source is what the agent shows through the API.
type Source interface {
	// Status is the MQTT status document plus local detail.
	Status() lpsync.Status
	// Calls are the calls in progress, numbers masked.
	Calls() []Call
	// Violations are the most recent first, numbers masked.
	Violations(limit int) []Violation
	// AddConsent stores a consent record and returns its id.
	AddConsent(ctx context.Context, c *store.Consent) (string, error)
	// Health checks what must work for the agent to do its job; each
	// entry starts with "ok" (possibly "ok: not configured") or says what
	// is wrong.
	Health() map[string]string
}

// Call is an active call as the API shows it.
type Call struct {
	CallID    string    `json:"call_id"`
	Line      string    `json:"line"`
	Direction string    `json:"direction"`
	Remote    string    `json:"remote"` // masked
	State     string    `json:"state"`
	StartedAt time.Time `json:"started_at"`
	Answered  time.Time `json:"answered_at,omitzero"`
	DurationS float64   `json:"duration_s"`
}

// Violation is a recent violation as the API shows it.
type Violation struct {
	At       time.Time      `json:"at"`
	Rule     string         `json:"rule"`
	Line     string         `json:"line"`
	Action   string         `json:"action"`
	CallID   string         `json:"call_id,omitempty"`
	Evidence map[string]any `json:"evidence,omitempty"`
	Numbers  []string       `json:"numbers,omitempty"` // masked
}

// Options configure a Server.
type Options struct {
	Source Source
	// Registry holds the metrics /metrics exposes.
	Registry *prometheus.Registry
	// Normalize reads a phone number as the store does (E.164, with the
	// device's default country).
	Normalize func(string) (string, error)
	Logger    *slog.Logger
	// ServiceUser is the user the service runs as; it and the members of
	// its group may change state over the socket.
	ServiceUser string
	// Accounts is the account database writers are checked against;
	// default os/user.
	Accounts Accounts
}

// Server serves the API.
type Server struct {
	src     Source
	reg     *prometheus.Registry
	norm    func(string) (string, error)
	log     *slog.Logger
	writers writers
	mux     *http.ServeMux
}

// New makes the server.
func New(o Options) *Server {
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Accounts == nil {
		o.Accounts = osAccounts{}
	}
	src, reg, log := o.Source, o.Registry, o.Logger
	s := &Server{src: src, reg: reg, norm: o.Normalize, log: log, mux: http.NewServeMux(),
		writers: writers{accounts: o.Accounts, service: o.ServiceUser, self: os.Getuid()}}
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("GET /v1/calls", s.calls)
	s.mux.HandleFunc("GET /v1/violations", s.violations)
	s.mux.HandleFunc("POST /v1/consent", s.consent)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{log}}))
	s.mux.HandleFunc("GET /{$}", s.page)
	return s
}

// Handler is the API behind its guard. Served by Serve, it knows who is
// on each socket connection; served elsewhere, the socket is read-only.
func (s *Server) Handler() http.Handler { return s.guard(s.mux) }

// Serve listens on the unix socket (and addr when not empty) until ctx
// ends.
func (s *Server) Serve(ctx context.Context, socket, addr string) error {
	var listeners []net.Listener
	if socket != "" {
		l, err := listenUnix(socket)
		if err != nil {
			// The page and metrics on loopback are still worth having.
			socket = ""
			if addr == "" {
				return err
			}
			s.log.Error("local API socket not available; serving on api.listen only", "err", err)
		} else {
			listeners = append(listeners, l)
		}
	}
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("api.listen %s: %w", addr, err)
		}
		listeners = append(listeners, l)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10, ConnContext: connContext}
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		s.log.Info("local API listening", "addr", l.Addr().String())
		go func() { errc <- srv.Serve(l) }()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("local API stopped", "err", err)
		}
	}
	shut, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := srv.Shutdown(shut)
	if socket != "" {
		os.Remove(socket)
	}
	return err
}

// listenUnix makes the socket with mode 0660: the service's user and
// group (technicians added to the group) may use it, nobody else.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("api.socket: %w", err)
	}
	// A socket left by a killed agent would refuse the bind; one that
	// still answers belongs to another running agent.
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("api.socket %s: another agent is answering on it", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api.socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("api.socket: %w", err)
	}
	return l, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.src.Status())
}

func (s *Server) calls(w http.ResponseWriter, _ *http.Request) {
	calls := s.src.Calls()
	if calls == nil {
		calls = []Call{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"calls": calls})
}

func (s *Server) violations(w http.ResponseWriter, r *http.Request) {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit: want an integer from 1 to 1000")
			return
		}
		limit = n
	}
	vs := s.src.Violations(limit)
	if vs == nil {
		vs = []Violation{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"violations": vs})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	checks := s.src.Health()
	status := http.StatusOK
	for _, v := range checks {
		if !strings.HasPrefix(v, "ok") {
			status = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, status, map[string]any{"ok": status == http.StatusOK, "checks": checks})
}

// ConsentRequest is the body of POST /v1/consent.
type ConsentRequest struct {
	Subject    string `json:"subject"`
	Purpose    string `json:"purpose"`
	State      string `json:"state"`
	Method     string `json:"method"`
	CapturedAt string `json:"captured_at"` // RFC 3339; default now
	Evidence   string `json:"evidence"`
	Line       string `json:"line"`
}

// Validate checks each field; the map names each bad one.
func (c *ConsentRequest) Validate(now time.Time, normalize func(string) (string, error)) (*store.Consent, map[string]string) {
	bad := map[string]string{}
	rec := &store.Consent{Purpose: strings.TrimSpace(c.Purpose), State: c.State, Method: c.Method, Evidence: c.Evidence}
	if c.Subject == "" {
		bad["subject"] = "required: the person's phone number"
	} else if n, err := normalize(c.Subject); err != nil {
		bad["subject"] = "not a phone number this device can read (E.164 such as +15551234567, or national with default_country set)"
	} else {
		rec.Subject = n
	}
	if rec.Purpose == "" {
		bad["purpose"] = "required, e.g. sales-calls"
	} else if len(rec.Purpose) > 128 {
		bad["purpose"] = "at most 128 characters"
	}
	if rec.State == "" {
		rec.State = "granted"
	}
	if rec.State != "granted" && rec.State != "withdrawn" {
		bad["state"] = "granted or withdrawn"
	}
	switch rec.Method {
	case "ivr", "verbal", "web", "written", "other":
	case "":
		bad["method"] = "required: ivr, verbal, web, written or other"
	default:
		bad["method"] = "ivr, verbal, web, written or other"
	}
	rec.CapturedAt = now.UTC().Truncate(time.Second)
	if c.CapturedAt != "" {
		t, err := time.Parse(time.RFC3339, c.CapturedAt)
		switch {
		case err != nil:
			bad["captured_at"] = "an RFC 3339 time such as 2026-11-27T10:00:00Z"
		case t.After(now.Add(5 * time.Minute)):
			bad["captured_at"] = "in the future"
		default:
			rec.CapturedAt = t.UTC()
		}
	}
	if len(rec.Evidence) > 1024 {
		bad["evidence"] = "at most 1 KiB: a reference to the evidence, not the evidence"
	}
	if c.Line != "" {
		if n, err := normalize(c.Line); err != nil {
			bad["line"] = "not a phone number"
		} else {
			rec.Line = n
		}
	}
	return rec, bad
}

func (s *Server) consent(w http.ResponseWriter, r *http.Request) {
	var req ConsentRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		status := http.StatusBadRequest
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, "body: "+err.Error())
		return
	}
	rec, bad := req.Validate(time.Now(), s.norm)
	rec.RecordedBy = author(r.Context())
	if len(bad) > 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid consent record", "fields": bad})
		return
	}
	id, err := s.src.AddConsent(r.Context(), rec)
	if err != nil {
		if errors.Is(err, store.ErrInvalidRecord) {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.log.Error("consent not stored", "err", err)
		writeError(w, http.StatusInternalServerError, "not stored: "+err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": id})
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics", "err", fmt.Sprint(v...)) }
