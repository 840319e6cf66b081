package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
)

// built is the real binary, compiled once per run of the test binary for
// every test that starts it; with the race detector on, it is built with
// -race too, so the race pass covers the processes the end-to-end tests
// run, not only the test process.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	out  []byte
}

// buildAgent returns the path of the real binary, building it on first use.
func buildAgent(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "leadport-agent-e2e-"); built.err != nil {
			return
		}
		// Tests run the binary as other users too (nobody, the service
		// user).
		if built.err = os.Chmod(built.dir, 0o755); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "leadport-agent")
		args := []string{"build", "-ldflags", "-X github.com/leadport/leadport-agent/agent.version=v9.9.9-test", "-o", built.bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		built.out, built.err = exec.Command("go", append(args, ".")...).CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("build: %v\n%s", built.err, built.out)
	}
	return built.bin
}

func TestCLI(t *testing.T) {
	bin := buildAgent(t)
	good := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(good, []byte("data_dir: /tmp/leadport-test\nlines: [\"+15551230001\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("lines: [\"+15551230001\"]\nsip:\n  mode: telepathy\nmqtt:\n  brokers: [\"http://x:1\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string // substrings of stdout+stderr
	}{
		{"version", []string{"version"}, 0, []string{"v9.9.9-test", runtime.Version()}},
		{"config check ok", []string{"config", "check", good}, 0, []string{good + ": ok"}},
		{"config check reports every problem", []string{"config", "check", bad}, 1, []string{"bad.yaml:3: sip.mode", "bad.yaml:5: mqtt.brokers[0]"}},
		{"config check missing file", []string{"config", "check", "/nonexistent.yaml"}, 1, []string{"/nonexistent.yaml"}},
		{"config without file", []string{"config", "check"}, 2, []string{"usage: leadport-agent config check FILE"}},
		{"unknown command", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"no command", nil, 2, []string{"usage: leadport-agent <command>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(bin, tt.args...).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.wantOut {
				if !bytes.Contains(out, []byte(w)) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// run opens the store, says where it is, and closes it cleanly on SIGTERM
// and on SIGINT, so the next start finds the file unlocked and consistent.
func TestRunStopsCleanly(t *testing.T) {
	bin := buildAgent(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "agent.yaml")
			data := filepath.Join(dir, "data")
			if err := os.WriteFile(cfg, []byte("data_dir: "+data+"\napi: {socket: "+filepath.Join(dir, "api.sock")+"}\nlog: {format: json}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "run", "--config", cfg)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 100)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			waitFor := func(substr string) string {
				t.Helper()
				deadline := time.After(20 * time.Second)
				for {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatalf("agent exited before logging %q", substr)
						}
						if strings.Contains(l, substr) {
							return l
						}
					case <-deadline:
						cmd.Process.Kill()
						t.Fatalf("no %q logged within 20s", substr)
					}
				}
			}
			l := waitFor(`"msg":"agent running"`)
			if !strings.Contains(l, filepath.Join(data, store.FileName)) {
				t.Errorf("start-up log does not say where the store is: %s", l)
			}
			cmd.Process.Signal(sig)
			waitFor(`"msg":"agent stopping"`)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("agent exit after %v: %v", sig, err)
			}
			s, err := store.Open(store.Options{Dir: data})
			if err != nil {
				t.Fatalf("reopen after stop: %v", err)
			}
			defer s.Close()
			if err := s.Check(); err != nil {
				t.Errorf("store after stop: %v", err)
			}
		})
	}
}
