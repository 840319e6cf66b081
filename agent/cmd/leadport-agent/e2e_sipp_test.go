//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/internal/testport"
	"github.com/leadport/leadport-agent/store"
)

// TestSIPpCalls sizes; the defaults are what issue 3 asks for. Each flag
// also reads an environment variable, for `make test` and quick local runs:
//
//	go test ./agent/cmd/leadport-agent -run SIPp -v -sipp.seconds=5
var (
	sippRate      = flag.Int("sipp.rate", envInt("LEADPORT_SIPP_RATE", 50), "TestSIPpCalls: calls per second (env LEADPORT_SIPP_RATE)")
	sippSeconds   = flag.Int("sipp.seconds", envInt("LEADPORT_SIPP_SECONDS", 0), "TestSIPpCalls: seconds of calls; 0: 60, or 10 with -short (env LEADPORT_SIPP_SECONDS)")
	sippCallMs    = flag.Int("sipp.call_ms", envInt("LEADPORT_SIPP_CALL_MS", 1000), "TestSIPpCalls: length of each call in ms (env LEADPORT_SIPP_CALL_MS)")
	sippTransport = flag.String("sipp.transport", envString("LEADPORT_SIPP_TRANSPORT", "u1"), "TestSIPpCalls: SIPp -t of the caller, u1 (UDP) or t1 (TCP) (env LEADPORT_SIPP_TRANSPORT)")
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

const (
	sippLine   = "+15551230001" // the From user of scripts/sipp/uac.xml
	sippCallee = "+15557654321"
)

// TestSIPpCalls runs real SIPp through the real binary: a SIPp UAC calls
// from the Leadport line through the agent to a SIPp UAS (its sip.upstream),
// 50 calls/s for 60 s of 1 s calls. No call may fail, and once the agent has
// stopped its store must hold one usage record per call, each answered and
// as long as the call (no shorter, none much longer, and on average
// within 50 ms).
func TestSIPpCalls(t *testing.T) {
	sipp := needSIPp(t)
	rate, callMs, transport := *sippRate, *sippCallMs, *sippTransport
	seconds := *sippSeconds
	if seconds <= 0 {
		seconds = 60
		if testing.Short() {
			seconds = 10
		}
	}
	if rate <= 0 || callMs <= 0 || (transport != "u1" && transport != "t1") {
		t.Fatalf("bad sizes: rate %d, call %d ms, transport %q", rate, callMs, transport)
	}
	calls := rate * seconds
	scenarios := sippScenarios(t)

	bin := buildAgent(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	agentPort, uasPort, uacPort := freePort(t), freePort(t), freePort(t)

	// The UAS first: it is the agent's upstream.
	uas := startLogged(t, dir, "uas", sipp,
		"-sf", filepath.Join(scenarios, "uas.xml"), "-i", "127.0.0.1", "-p", strconv.Itoa(uasPort),
		"-t", "u1", "-nostdin", "-trace_err", "-error_file", filepath.Join(dir, "uas_errors.log"))
	waitListening(t, uas, "SIPp UAS", "udp", uasPort)

	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, fmt.Sprintf(`data_dir: %s
lines: [%q]
default_country: "1"
log: {level: warn}
api: {socket: %s}
sip:
  listen: ["udp://127.0.0.1:%d", "tcp://127.0.0.1:%d"]
  upstream: "udp://127.0.0.1:%d"
# One line placing 50 calls a second is machine-paced dialing and trunking
# by definition: those rules are off so that every call is relayed.
policy:
  forwarding: {action: "off"}
  pacing: {action: "off"}
  trunking: {action: "off"}
`, dataDir, sippLine, filepath.Join(dir, "api.sock"), agentPort, agentPort, uasPort))
	agent := startLogged(t, dir, "agent", bin, "run", "--config", cfg)
	waitListening(t, agent, "leadport-agent", "udp", agentPort)
	waitListening(t, agent, "leadport-agent", "tcp", agentPort)

	// The caller. Its exit code is 0 when every call succeeded, 1 when
	// some failed; the statistics file says how many.
	stat := filepath.Join(dir, "uac_stat.csv")
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds*3+callMs/1000+120)*time.Second)
	defer cancel()
	uacArgs := []string{
		"-sf", filepath.Join(scenarios, "uac.xml"), "-s", sippCallee,
		"-i", "127.0.0.1", "-p", strconv.Itoa(uacPort), "-t", transport, "-nostdin",
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(calls), "-d", strconv.Itoa(callMs),
		"-recv_timeout", "10000", "-timeout", strconv.Itoa(seconds*2+callMs/1000+60) + "s", "-timeout_error",
		"-trace_stat", "-stf", stat, "-fd", "1",
		"-trace_err", "-error_file", filepath.Join(dir, "uac_errors.log"),
		"127.0.0.1:" + strconv.Itoa(agentPort),
	}
	t.Logf("%d calls of %d ms at %d/s over %s: sipp %s", calls, callMs, rate, transport, strings.Join(uacArgs, " "))
	uac := exec.CommandContext(ctx, sipp, uacArgs...)
	uac.Dir = dir
	uacOut, err := os.Create(filepath.Join(dir, "uac.out"))
	if err != nil {
		t.Fatal(err)
	}
	uac.Stdout, uac.Stderr = uacOut, uacOut
	runErr := uac.Run()
	uacOut.Close()
	ok, failed := sippCounts(t, stat)
	t.Logf("SIPp: %d successful, %d failed calls (exit: %v)", ok, failed, runErr)
	if runErr != nil || failed != 0 || ok != calls {
		dumpFiles(t, dir, "uac_errors.log", "uas_errors.log", "agent.log")
		t.Errorf("SIPp: %d of %d calls successful, %d failed, exit %v; want all successful", ok, calls, failed, runErr)
	}

	// Stop the agent (it must write every ended call before it exits) and
	// the UAS.
	agent.stop(t, syscall.SIGTERM, 30*time.Second)
	uas.stop(t, syscall.SIGKILL, 10*time.Second)
	if t.Failed() {
		return
	}

	s, err := store.Open(store.Options{Dir: dataDir})
	if err != nil {
		t.Fatalf("open the agent's store: %v", err)
	}
	defer s.Close()
	recs, err := s.Pending(store.TypeUsage, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != ok {
		t.Errorf("%d usage records, want %d (one per successful call)", len(recs), ok)
	}
	want := time.Duration(callMs) * time.Millisecond
	var bad int
	var minD, maxD, sum time.Duration
	for i, r := range recs {
		p, err := r.Decode()
		if err != nil {
			t.Fatalf("record %s: %v", r.ID, err)
		}
		u, isUsage := p.(*store.Usage)
		if !isUsage {
			t.Fatalf("record %s is a %T, not a usage record", r.ID, p)
		}
		d := time.Duration(math.Round(u.DurationS * float64(time.Second)))
		if i == 0 || d < minD {
			minD = d
		}
		if d > maxD {
			maxD = d
		}
		sum += d
		var problems []string
		if u.Direction != "outbound" {
			problems = append(problems, fmt.Sprintf("direction %q, want outbound", u.Direction))
		}
		if u.Line != sippLine {
			problems = append(problems, fmt.Sprintf("line %q, want %s", u.Line, sippLine))
		}
		if u.Disposition != "answered" {
			problems = append(problems, fmt.Sprintf("disposition %q, want answered", u.Disposition))
		}
		if u.Remote != sippCallee {
			problems = append(problems, fmt.Sprintf("remote %q, want %s", u.Remote, sippCallee))
		}
		// The agent sees the 200 before SIPp's pause starts and the BYE
		// after it ends, so no call is shorter than the pause (less SIPp's
		// 10 ms timer); a loaded machine may delay single messages by
		// much more than the mean, checked below.
		if diff := d - want; diff < -20*time.Millisecond || diff > 500*time.Millisecond {
			problems = append(problems, fmt.Sprintf("duration %v, want %v (-20 ms to +500 ms)", d, want))
		}
		if u.AnsweredAt.IsZero() || u.EndedAt.IsZero() {
			problems = append(problems, "answered_at or ended_at missing")
		}
		if len(problems) > 0 {
			if bad++; bad <= 10 {
				t.Errorf("usage record %s: %s", r.ID, strings.Join(problems, "; "))
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d records wrong in all", bad)
	}
	if len(recs) > 0 {
		mean := sum / time.Duration(len(recs))
		t.Logf("%d usage records; durations %v to %v, mean %v (calls of %v)", len(recs), minD, maxD, mean, want)
		if diff := mean - want; diff < -10*time.Millisecond || diff > 50*time.Millisecond {
			t.Errorf("mean duration %v, want %v (-10 ms to +50 ms)", mean, want)
		}
	}
}

// needSIPp returns the path of sipp. Without it the test is skipped, or
// fails when LEADPORT_E2E=1 (CI, where scripts/setup.sh installs it).
func needSIPp(t *testing.T) string {
	t.Helper()
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		if os.Getenv("LEADPORT_E2E") == "1" {
			t.Fatal("sipp is not on PATH (Debian package sip-tester; scripts/setup.sh installs it) and LEADPORT_E2E=1")
		}
		t.Skip("sipp is not on PATH (Debian package sip-tester; scripts/setup.sh installs it); LEADPORT_E2E=1 makes this a failure")
	}
	return sipp
}

// sippScenarios is the absolute path of scripts/sipp.
func sippScenarios(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "scripts", "sipp"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// proc is a child process whose output goes to DIR/NAME.log.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

func startLogged(t *testing.T, dir, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		out.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits for the exit; for the agent (SIGTERM) the exit
// must be clean.
func (p *proc) stop(t *testing.T, sig syscall.Signal, within time.Duration) {
	t.Helper()
	if p.exited() {
		if sig != syscall.SIGKILL {
			t.Errorf("%s exited before it was stopped: %v", p.name, p.err)
			dumpFiles(t, filepath.Dir(p.log), filepath.Base(p.log))
		}
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(within):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within %v of %v", p.name, within, sig)
		dumpFiles(t, filepath.Dir(p.log), filepath.Base(p.log))
		return
	}
	if sig != syscall.SIGKILL && p.err != nil {
		t.Errorf("%s exit after %v: %v", p.name, sig, p.err)
		dumpFiles(t, filepath.Dir(p.log), filepath.Base(p.log))
	}
}

// freePort returns a loopback port free for both UDP and TCP, for a
// process started later to bind (testport says why not ":0").
func freePort(t *testing.T) int { return testport.Free(t) }

// waitListening polls /proc/net/{udp,tcp} until a socket is bound to
// 127.0.0.1:port (for TCP: listening), failing when p exits or 20 s pass.
func waitListening(t *testing.T, p *proc, what, proto string, port int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !bound(t, proto, port) {
		if p.exited() {
			dumpFiles(t, filepath.Dir(p.log), filepath.Base(p.log))
			t.Fatalf("%s exited before binding %s port %d: %v", what, proto, port, p.err)
		}
		if time.Now().After(deadline) {
			dumpFiles(t, filepath.Dir(p.log), filepath.Base(p.log))
			t.Fatalf("%s did not bind %s port %d within 20 s", what, proto, port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func bound(t *testing.T, proto string, port int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/" + proto)
	if err != nil {
		t.Fatal(err)
	}
	// local_address is hex IP:port; 0100007F is 127.0.0.1 and 00000000 any;
	// TCP state 0A is LISTEN.
	suffix := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		if ip := strings.TrimSuffix(f[1], suffix); ip != "0100007F" && ip != "00000000" {
			continue
		}
		if proto == "tcp" && f[3] != "0A" {
			continue
		}
		return true
	}
	return false
}

// sippCounts reads the successful and failed call counts from the last line
// of a SIPp -trace_stat file.
func sippCounts(t *testing.T, path string) (ok, failed int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("SIPp statistics: %v", err)
		return 0, 0
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		t.Errorf("SIPp statistics %s: no data line", path)
		return 0, 0
	}
	head, last := strings.Split(lines[0], ";"), strings.Split(lines[len(lines)-1], ";")
	get := func(name string) int {
		for i, h := range head {
			if h == name && i < len(last) {
				n, err := strconv.Atoi(strings.TrimSpace(last[i]))
				if err != nil {
					t.Errorf("SIPp statistics: %s = %q", name, last[i])
				}
				return n
			}
		}
		t.Errorf("SIPp statistics: no %s column", name)
		return 0
	}
	return get("SuccessfulCall(C)"), get("FailedCall(C)")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// dumpFiles logs the last 4 KiB of each file that exists in dir.
func dumpFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if errors.Is(err, os.ErrNotExist) || len(b) == 0 {
			continue
		}
		if len(b) > 4096 {
			b = b[len(b)-4096:]
		}
		t.Logf("--- %s (end):\n%s", n, b)
	}
}
