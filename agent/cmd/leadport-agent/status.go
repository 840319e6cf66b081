package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/leadport/leadport-agent/agent/api"
	"github.com/leadport/leadport-agent/agent/config"
)

// apiClient talks to the running agent's local API over its unix socket,
// as `tailscale status` talks to tailscaled.
type apiClient struct {
	socket string
	http   *http.Client
}

func newAPIClient(fs *flag.FlagSet) func() (*apiClient, error) {
	path := fs.String("config", "", "configuration file, for api.socket (default: $LEADPORT_CONFIG, else "+defaultConfigPath+" when it exists)")
	socket := fs.String("socket", "", "the agent's API socket; default: api.socket of the configuration")
	return func() (*apiClient, error) {
		sock := *socket
		if sock == "" {
			p, _ := doctorConfigFile(*path, config.DefaultPath(), defaultConfigPath)
			cfg, err := config.Load(p)
			if err != nil {
				return nil, err
			}
			sock = cfg.API.Socket
		}
		return &apiClient{socket: sock, http: unixHTTPClient(sock)}, nil
	}
}

// unixHTTPClient speaks HTTP to the agent over its unix socket.
func unixHTTPClient(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

func (c *apiClient) do(method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://agent"+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("the agent does not answer on %s (is it running? `leadport-agent doctor` checks): %w", c.socket, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return res.StatusCode, fmt.Errorf("%s: %w", path, err)
		}
	}
	return res.StatusCode, nil
}

func statusCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := newAPIClient(fs)
	asJSON := fs.Bool("json", false, "print the status document, health, calls and recent violations as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return errUsage
	}
	c, err := client()
	if err != nil {
		return err
	}
	var st map[string]any
	var health struct {
		OK     bool              `json:"ok"`
		Checks map[string]string `json:"checks"`
	}
	var calls struct {
		Calls []map[string]any `json:"calls"`
	}
	var viols struct {
		Violations []map[string]any `json:"violations"`
	}
	if _, err := c.do("GET", "/v1/status", nil, &st); err != nil {
		return err
	}
	if _, err := c.do("GET", "/healthz", nil, &health); err != nil {
		return err
	}
	if _, err := c.do("GET", "/v1/calls", nil, &calls); err != nil {
		return err
	}
	if _, err := c.do("GET", "/v1/violations?limit=5", nil, &viols); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"status": st, "health": health, "calls": calls.Calls, "violations": viols.Violations})
	}
	printStatus(stdout, st, health.OK, health.Checks, calls.Calls, viols.Violations)
	if !health.OK {
		return errors.New("not healthy")
	}
	return nil
}

// printStatus is the short human summary.
func printStatus(w io.Writer, st map[string]any, ok bool, checks map[string]string, calls, viols []map[string]any) {
	get := func(m map[string]any, keys ...string) any {
		var v any = m
		for _, k := range keys {
			mm, isMap := v.(map[string]any)
			if !isMap {
				return nil
			}
			v = mm[k]
		}
		return v
	}
	str := func(v any) string {
		if v == nil {
			return ""
		}
		if f, isNum := v.(float64); isNum {
			return fmt.Sprint(int64(f))
		}
		return fmt.Sprint(v)
	}
	health := "OK"
	if !ok {
		var bad []string
		for k, v := range checks {
			if !strings.HasPrefix(v, "ok") {
				bad = append(bad, k+": "+v)
			}
		}
		sort.Strings(bad)
		health = "PROBLEM (" + strings.Join(bad, "; ") + ")"
	}
	up := ""
	if t, err := time.Parse(time.RFC3339Nano, str(st["started_at"])); err == nil {
		up = ", up " + time.Since(t).Round(time.Second).String()
	}
	fmt.Fprintf(w, "leadport-agent %s on %s: %s%s\n", str(st["version"]), str(st["device_id"]), health, up)

	sip := str(get(st, "sip", "state"))
	if ls, isList := get(st, "sip", "listeners").([]any); isList {
		var l []string
		for _, x := range ls {
			l = append(l, str(x))
		}
		sip = "proxy on " + strings.Join(l, ", ") + "; upstream " + str(get(st, "sip", "upstream"))
		if ans, known := get(st, "sip", "upstream_check", "answers").(bool); known {
			if ans {
				sip += fmt.Sprintf(" answers (%s, %s ms)", str(get(st, "sip", "upstream_check", "status")), str(get(st, "sip", "upstream_check", "rtt_ms")))
			} else {
				sip += " DOES NOT ANSWER (" + str(get(st, "sip", "upstream_check", "error")) + ")"
			}
		}
	}
	fmt.Fprintf(w, "  SIP:     %s\n", sip)
	var lines []string
	if ls, isList := st["lines"].([]any); isList {
		for _, x := range ls {
			lines = append(lines, str(x))
		}
	}
	if len(lines) == 0 {
		lines = []string{"none configured"}
	}
	fmt.Fprintf(w, "  Lines:   %s\n", strings.Join(lines, ", "))
	fmt.Fprintf(w, "  Calls:   %d active, %s since start, %s blocked; policy version %s\n", len(calls),
		orZero(str(get(st, "sip", "calls"))), orZero(str(get(st, "sip", "blocks"))), orZero(str(st["policy_version"])))
	syncLine := "no broker configured: records wait in the store"
	if c, _ := get(st, "sync", "configured").(bool); c {
		if conn, _ := get(st, "sync", "connected").(bool); conn {
			syncLine = "connected to " + str(get(st, "sync", "broker"))
		} else {
			syncLine = "NOT connected (" + str(get(st, "sync", "last_error")) + ")"
		}
		if t, err := time.Parse(time.RFC3339Nano, str(get(st, "sync", "last_sync"))); err == nil && !t.IsZero() {
			syncLine += "; last sync " + time.Since(t).Round(time.Second).String() + " ago"
		}
	}
	fmt.Fprintf(w, "  Sync:    %s\n", syncLine)
	var pend []string
	for _, typ := range []string{"usage", "consent", "violation", "receipt"} {
		pend = append(pend, typ+" "+orZero(str(get(st, "outbox", typ, "pending"))))
	}
	fmt.Fprintf(w, "  Pending: %s\n", strings.Join(pend, ", "))
	for _, c := range calls {
		fmt.Fprintf(w, "  call     %s %s %s %s\n", str(c["line"]), str(c["direction"]), str(c["remote"]), str(c["state"]))
	}
	for _, v := range viols {
		when := ""
		if t, err := time.Parse(time.RFC3339Nano, str(v["at"])); err == nil {
			when = time.Since(t).Round(time.Second).String() + " ago"
		}
		var ev []string
		if m, isMap := v["evidence"].(map[string]any); isMap {
			for k, x := range m {
				ev = append(ev, fmt.Sprintf("%s=%v", k, x))
			}
			sort.Strings(ev)
		}
		fmt.Fprintf(w, "  %-8s %s %s on %s: %s\n", str(v["action"]), when, str(v["rule"]), str(v["line"]), strings.Join(ev, " "))
	}
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

// consentCmd records a consent through the running agent.
func consentCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "add" {
		return errUsage
	}
	fs := flag.NewFlagSet("consent add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := newAPIClient(fs)
	var req api.ConsentRequest
	fs.StringVar(&req.Subject, "subject", "", "the person's phone number; required")
	fs.StringVar(&req.Purpose, "purpose", "", "what the consent is for, e.g. sales-calls; required")
	fs.StringVar(&req.State, "state", "granted", "granted or withdrawn")
	fs.StringVar(&req.Method, "method", "", "ivr, verbal, web, written or other; required")
	fs.StringVar(&req.CapturedAt, "captured-at", "", "when it was given (RFC 3339); default now")
	fs.StringVar(&req.Evidence, "evidence", "", "a reference to the evidence (at most 1 KiB)")
	fs.StringVar(&req.Line, "line", "", "the Leadport line it concerns")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := client()
	if err != nil {
		return err
	}
	var res struct {
		ID     string            `json:"id"`
		Error  string            `json:"error"`
		Fields map[string]string `json:"fields"`
	}
	status, err := c.do("POST", "/v1/consent", req, &res)
	if err != nil {
		return err
	}
	if status != http.StatusCreated {
		var parts []string
		for k, v := range res.Fields {
			parts = append(parts, "--"+strings.ReplaceAll(k, "_", "-")+": "+v)
		}
		sort.Strings(parts)
		if len(parts) > 0 {
			return fmt.Errorf("%s\n  %s", res.Error, strings.Join(parts, "\n  "))
		}
		return errors.New(res.Error)
	}
	fmt.Fprintf(stdout, "consent recorded: %s\n", res.ID)
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
