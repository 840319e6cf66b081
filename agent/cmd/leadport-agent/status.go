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
	"strconv"
	"strings"
	"time"

	"github.com/leadport/leadport-agent/agent/api"
	"github.com/leadport/leadport-agent/agent/config"
	lpsync "github.com/leadport/leadport-agent/sync"
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
	var st lpsync.Status
	var health struct {
		OK     bool              `json:"ok"`
		Checks map[string]string `json:"checks"`
	}
	var calls struct {
		Calls []api.Call `json:"calls"`
	}
	var viols struct {
		Violations []api.Violation `json:"violations"`
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
func printStatus(w io.Writer, st lpsync.Status, ok bool, checks map[string]string, calls []api.Call, viols []api.Violation) {
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
	if !st.StartedAt.IsZero() {
		up = ", up " + time.Since(st.StartedAt).Round(time.Second).String()
	}
	fmt.Fprintf(w, "leadport-agent %s on %s: %s%s\n", st.Version, st.DeviceID, health, up)

	sip, sipLine := st.SIP, ""
	if sip == nil {
		sip = &lpsync.SIPStatus{}
	}
	sipLine = sip.State
	if len(sip.Listeners) > 0 {
		sipLine = "proxy on " + strings.Join(sip.Listeners, ", ") + "; upstream " + sip.Upstream
		if c := sip.UpstreamCheck; c != nil {
			if c.Answers {
				sipLine += fmt.Sprintf(" answers (%d, %s ms)", c.Status, strconv.FormatFloat(c.RTTms, 'f', -1, 64))
			} else {
				sipLine += " DOES NOT ANSWER (" + c.Error + ")"
			}
		}
	}
	fmt.Fprintf(w, "  SIP:     %s\n", sipLine)
	lines := st.Lines
	if len(lines) == 0 {
		lines = []string{"none configured"}
	}
	fmt.Fprintf(w, "  Lines:   %s\n", strings.Join(lines, ", "))
	fmt.Fprintf(w, "  Calls:   %d active, %d since start, %d blocked; policy version %d\n", len(calls), sip.Calls, sip.Blocks, st.PolicyVersion)
	if reg := sip.Register; reg != nil && (reg.Fallback || len(reg.LinesFailing) > 0) {
		line := "  Registrations: mode " + reg.Mode
		if reg.Fallback {
			line += " (the registrar refused or ignored Path)"
		}
		if len(reg.LinesFailing) > 0 {
			var ls []string
			for l, status := range reg.LinesFailing {
				ls = append(ls, fmt.Sprintf("%s (%d)", l, status))
			}
			sort.Strings(ls)
			line += "; failing: " + strings.Join(ls, ", ")
		}
		fmt.Fprintln(w, line)
	}
	if sec := sip.Security; sec != nil && sec.Dropped+sec.Refused+sec.Scans > 0 {
		fmt.Fprintf(w, "  Unknown: %d sources tracked; %d messages dropped, %d requests refused, %d penalties, %d security.scan reports\n",
			sec.Sources, sec.Dropped, sec.Refused, sec.Penalised, sec.Scans)
	}
	syncLine := "no broker configured: records wait in the store"
	if sy := st.Sync; sy != nil && sy.Configured {
		if sy.Connected {
			syncLine = "connected to " + sy.Broker
		} else {
			syncLine = "NOT connected (" + sy.LastError + ")"
		}
		if !sy.LastSync.IsZero() {
			syncLine += "; last sync " + time.Since(sy.LastSync).Round(time.Second).String() + " ago"
		}
	}
	fmt.Fprintf(w, "  Sync:    %s\n", syncLine)
	var pend []string
	for _, typ := range []string{"usage", "consent", "violation", "receipt"} {
		pend = append(pend, fmt.Sprintf("%s %d", typ, st.Outbox[typ].Pending))
	}
	fmt.Fprintf(w, "  Pending: %s\n", strings.Join(pend, ", "))
	for _, c := range calls {
		fmt.Fprintf(w, "  call     %s %s %s %s\n", c.Line, c.Direction, c.Remote, c.State)
	}
	for _, v := range viols {
		when := ""
		if !v.At.IsZero() {
			when = time.Since(v.At).Round(time.Second).String() + " ago"
		}
		var ev []string
		for k, x := range v.Evidence {
			ev = append(ev, fmt.Sprintf("%s=%v", k, x))
		}
		sort.Strings(ev)
		fmt.Fprintf(w, "  %-8s %s %s on %s: %s\n", v.Action, when, v.Rule, v.Line, strings.Join(ev, " "))
	}
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
