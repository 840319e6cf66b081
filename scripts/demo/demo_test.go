package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDemo runs the demo as `make demo` does, with -exit, against a
// freshly built agent, and checks that each step did what the demo says
// it does. The scenario's own think times make it last about 30 s.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo's scenario takes about 30 s")
	}
	slog.SetDefault(quiet) // the SIP library's chatter on closing
	bin := filepath.Join(t.TempDir(), "leadport-agent")
	build := exec.Command("go", "build", "-o", bin, "./agent/cmd/leadport-agent")
	build.Dir = filepath.Join("..", "..") // the module root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := &testLog{t: t}
	// APIPort 0: any free port, so a demo running on 9797 does not matter.
	d, err := Start(ctx, Options{Agent: bin, Dir: t.TempDir(), Out: out})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Close()
		out.flush()
		if d.agentErr != nil {
			t.Errorf("the agent did not stop cleanly on SIGTERM: %v", d.agentErr)
		}
		if t.Failed() {
			if b, err := os.ReadFile(d.Log); err == nil {
				t.Logf("agent log:\n%s", b)
			}
		}
	}()
	res, err := d.Scenario(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The human calls: all rang and were answered.
	if len(res.Human) != 3 {
		t.Errorf("%d human calls, want 3", len(res.Human))
	}
	for i, c := range res.Human {
		if !c.Ringing || !c.Answered() {
			t.Errorf("human call %d: ringing %v, %s; want ringing, then answered", i+1, c.Ringing, c.outcome())
		}
	}
	// The burst: refused with 403 pacing after at most 3 calls, and every
	// attempt after that too; the ones before were answered.
	if res.BurstStop < 1 || res.BurstStop > 3 {
		t.Errorf("the burst was first refused with 403 pacing at attempt %d, want 1 to 3", res.BurstStop)
	}
	for i, c := range res.Burst {
		refused := c.Status == 403 && c.Warning == pacingWarning
		if n := i + 1; n < res.BurstStop && !c.Answered() || n >= res.BurstStop && !refused {
			t.Errorf("dialer attempt %d: %s (burst refused from %d on)", n, c.outcome(), res.BurstStop)
		}
	}
	// The forwarded call: 403 naming forwarding.diversion.
	if res.Forwarded.Status != 403 || res.Forwarded.Warning != diversionWarning {
		t.Errorf("forwarded call: %s; want 403 with Warning %s", res.Forwarded.outcome(), diversionWarning)
	}
	// Refused INVITEs never reached the edge.
	if want := 3 + res.BurstStop - 1; res.EdgeInvites != want {
		t.Errorf("the edge received %d INVITEs, want %d", res.EdgeInvites, want)
	}
	// The consent was recorded, and went up to the broker with the rest.
	if !strings.HasPrefix(res.ConsentOut, "consent recorded: ") {
		t.Errorf("consent add printed %q", res.ConsentOut)
	}
	blocks := 1 + len(res.Burst) - res.BurstStop + 1
	for typ, want := range map[string]int{"consent": 1, "receipt": 1, "violation": blocks, "usage": len(res.Human) + len(res.Burst)} {
		if got := res.Synced[typ]; got < want {
			t.Errorf("the broker got %d %s records, want at least %d", got, typ, want)
		}
	}
	if res.PingReceipt != "done" {
		t.Errorf("ping %s: receipt %q, want done", res.PingID, res.PingReceipt)
	}
	// `leadport-agent status` shows the calls and the blocks.
	for _, want := range []string{"on " + deviceID + ": OK", line,
		fmt.Sprintf(" since start, %d blocked;", blocks),
		"blocked", "pacing on " + line, "forwarding.diversion on " + line, "Pending: usage 0, consent 0, violation 0, receipt 0"} {
		if !strings.Contains(res.Status, want) {
			t.Errorf("status output lacks %q:\n%s", want, res.Status)
		}
	}
	// So does the API behind the status page, and the page is served.
	var v struct {
		Violations []struct{ Rule, Action string }
	}
	getJSON(t, d.APIURL+"/v1/violations", &v)
	rules := map[string]int{}
	for _, x := range v.Violations {
		if x.Action == "blocked" {
			rules[x.Rule]++
		}
	}
	if rules["pacing"] < 1 || rules["forwarding.diversion"] != 1 {
		t.Errorf("/v1/violations blocked by rule: %v; want pacing and forwarding.diversion", rules)
	}
	res2, err := http.Get(d.APIURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.StatusCode != 200 || !strings.HasPrefix(res2.Header.Get("Content-Type"), "text/html") {
		t.Errorf("status page: %s, %s", res2.Status, res2.Header.Get("Content-Type"))
	}
	if p := res.Problems(); len(p) > 0 {
		t.Errorf("the demo reports problems: %q", p)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// testLog hands the demo's narration to t.Log a line at a time.
type testLog struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		i := bytes.IndexByte(l.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Log(string(l.buf.Next(i + 1)[:i]))
	}
}

func (l *testLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 0 {
		l.t.Log(l.buf.String())
		l.buf.Reset()
	}
}
