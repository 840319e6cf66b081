package synctest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Mosquitto is Debian's mosquitto keeping its state on disk (sessions,
// their subscriptions and queued QoS 1 messages), which a test stops and
// starts again on the same port and directory, as an operator restarting
// the broker would.
type Mosquitto struct {
	Addr string
	t    testing.TB
	bin  string
	dir  string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartMosquittoPersistent runs mosquitto with persistence on a free
// loopback port, without TLS or authentication.
func StartMosquittoPersistent(t testing.TB) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, bin: NeedBinary(t, "mosquitto"), dir: t.TempDir(), Addr: FreeAddr(t)}
	_, port, _ := net.SplitHostPort(m.Addr)
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	conf := runAs() + fmt.Sprintf(`persistence true
persistence_location %s/
autosave_interval 1
allow_anonymous true
listener %s 127.0.0.1
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
`, m.dir, port)
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(func() {
		if m.cmd != nil {
			m.cmd.Process.Kill()
			<-m.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(m.dir, "broker.log"))
			t.Logf("mosquitto log:\n%s", b)
		}
	})
	return m
}

// URL is the broker's address as a broker URL.
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr }

// Start runs mosquitto on its port and directory and waits until it
// listens.
func (m *Mosquitto) Start() {
	m.t.Helper()
	out, err := os.OpenFile(filepath.Join(m.dir, "broker.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = out, out
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); out.Close(); close(done) }(m.cmd, m.done)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.done:
			b, _ := os.ReadFile(filepath.Join(m.dir, "broker.log"))
			m.t.Fatalf("mosquitto exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(m.dir, "broker.log"))
			m.t.Fatalf("mosquitto not listening on %s after 20 s:\n%s", m.Addr, strings.TrimSpace(string(b)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends mosquitto with SIGTERM, on which it writes its state to disk,
// and waits for it to exit.
func (m *Mosquitto) Stop() {
	m.t.Helper()
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		m.t.Fatal("mosquitto did not stop within 20 s of SIGTERM")
	}
	m.cmd = nil
	if _, err := os.Stat(filepath.Join(m.dir, "mosquitto.db")); err != nil {
		m.t.Fatalf("mosquitto kept no state on disk: %v", err)
	}
}
