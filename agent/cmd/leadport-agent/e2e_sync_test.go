//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
	"github.com/leadport/leadport-agent/store/storetest"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// syncRig is the real binary against a real broker (mochi-mqtt in this
// test process), with the platform tools of the same binary.
type syncRig struct {
	t       *testing.T
	bin     string
	dir     string
	data    string
	config  string
	broker  *synctest.Broker
	keyFile string
	kid     string
}

func newSyncRig(t *testing.T) *syncRig {
	r := &syncRig{t: t, bin: buildAgent(t), dir: t.TempDir(), broker: synctest.StartBroker(t)}
	r.data = filepath.Join(r.dir, "data")
	r.keyFile = filepath.Join(r.dir, "platform.key")
	out := r.cli("fleet", "keygen", "--out", r.keyFile, "--kid", "platform-e2e")
	var kg struct {
		Kid       string `json:"kid"`
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(out, &kg); err != nil {
		t.Fatalf("keygen output %q: %v", out, err)
	}
	r.kid = kg.Kid
	r.config = filepath.Join(r.dir, "agent.yaml")
	writeFile(t, r.config, fmt.Sprintf(`device_id: pbx-e2e
data_dir: %s
default_country: "1"
mqtt:
  brokers: [%q]
  status_interval_s: 5
commands:
  trusted_keys: {%s: %q}
api: {socket: %s}
log: {level: debug}
`, r.data, r.broker.URL(), kg.Kid, kg.PublicKey, filepath.Join(r.dir, "api.sock")))
	return r
}

// cli runs the binary and returns its stdout; it must succeed.
func (r *syncRig) cli(args ...string) []byte {
	r.t.Helper()
	cmd := exec.Command(r.bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		r.t.Fatalf("leadport-agent %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// fill writes n usage records into the agent's store before it starts.
func (r *syncRig) fill(n int, remote func(int) string) []string {
	r.t.Helper()
	st, err := store.Open(store.Options{Dir: r.data, DefaultCountry: "1"})
	if err != nil {
		r.t.Fatal(err)
	}
	defer st.Close()
	return storetest.FillUsage(r.t, st, n, remote)
}

// sendCommand signs a command with the platform's key and sends it to the
// device with the platform tools of the binary; it returns the token as
// sent (the payload the device receives). args "" sends none.
func (r *syncRig) sendCommand(id, typ, args string) []byte {
	r.t.Helper()
	sign := []string{"fleet", "sign", "--key", r.keyFile, "--kid", r.kid, "--type", typ, "--device", "pbx-e2e", "--id", id}
	if args != "" {
		sign = append(sign, "--args", args)
	}
	token := bytes.TrimSpace(r.cli(sign...))
	file := filepath.Join(r.dir, id+".jws")
	if err := os.WriteFile(file, token, 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.cli("fleet", "send", "--broker", r.broker.URL(), "--device", "pbx-e2e", "--token", file)
	return token
}

// receipt returns the receipt record for a command id that reached the
// broker, as JSON, or nil.
func (r *syncRig) receipt(id string) json.RawMessage {
	r.t.Helper()
	got := r.broker.Got
	got.Mu.Lock()
	defer got.Mu.Unlock()
	for _, m := range got.Msg["leadport/v1/dev/pbx-e2e/receipt"] {
		var batch struct{ Records []json.RawMessage }
		if err := json.Unmarshal(m, &batch); err != nil {
			r.t.Fatalf("receipt batch %s: %v", m, err)
		}
		for _, raw := range batch.Records {
			var rc struct {
				CommandID string `json:"command_id"`
			}
			if err := json.Unmarshal(raw, &rc); err != nil {
				r.t.Fatalf("receipt %s: %v", raw, err)
			}
			if rc.CommandID == id {
				return raw
			}
		}
	}
	return nil
}

// waitReceipt waits for the receipt of command id at the broker.
func (r *syncRig) waitReceipt(id string) json.RawMessage {
	r.t.Helper()
	pollUntil(r.t, 30*time.Second, "the receipt of "+id, func() bool { return r.receipt(id) != nil })
	return r.receipt(id)
}

func (r *syncRig) start(name string) *proc {
	return startLogged(r.t, r.dir, name, r.bin, "run", "--config", r.config)
}

func (r *syncRig) pending() int {
	r.t.Helper()
	st, err := store.Open(store.Options{Dir: r.data, DefaultCountry: "1"})
	if err != nil {
		r.t.Fatal(err)
	}
	defer st.Close()
	s, err := st.Stats()
	if err != nil {
		r.t.Fatal(err)
	}
	n := 0
	for _, ts := range s.Outbox {
		n += ts.Pending
	}
	return n
}

func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSyncSIGKILL drains a backlog through the real binary and SIGKILLs it
// three times in the middle: every record reaches the broker at least
// once, ids stable, and the outbox ends empty.
func TestSyncSIGKILL(t *testing.T) {
	r := newSyncRig(t)
	n := 60_000
	if testing.Short() {
		n = 15_000
	}
	ids := r.fill(n, func(i int) string { return fmt.Sprintf("+1212555%04d", i%10000) })
	for kill := 1; kill <= 3; kill++ {
		a := r.start(fmt.Sprintf("agent-%d", kill))
		// Some of the records must be new at the broker with this agent:
		// a kill before it drained anything would interrupt nothing.
		target, before := n*kill/4, r.broker.Got.Received()
		pollUntil(t, time.Minute, fmt.Sprintf("%d records, some from this agent, before kill %d", target, kill), func() bool {
			got := r.broker.Got.Received()
			return got >= target && got > before || a.exited()
		})
		if a.exited() {
			dumpFiles(t, r.dir, filepath.Base(a.log))
			t.Fatalf("agent exited: %v", a.err)
		}
		a.stop(t, syscall.SIGKILL, 10*time.Second)
		// The agent is dead: the broker has all it will get from it, which
		// must be part of the backlog and not all of it.
		if got := r.broker.Got.Received(); got >= n {
			t.Fatalf("kill %d came after the drain: the broker had all %d records", kill, got)
		}
	}
	a := r.start("agent-last")
	pollUntil(t, 2*time.Minute, "every record at the broker", func() bool { return r.broker.Got.Received() == n })
	a.stop(t, syscall.SIGTERM, 15*time.Second)
	if p := r.pending(); p != 0 {
		t.Errorf("%d records still pending after the drain", p)
	}
	got := r.broker.Got
	t.Logf("%d records through 3 SIGKILLs; %d sent twice or more", n, got.Duplicates(ids))
	got.Mu.Lock()
	defer got.Mu.Unlock()
	// The last will, or the shutdown, left the status offline.
	status := got.Msg["leadport/v1/dev/pbx-e2e/status"]
	if len(status) == 0 || !bytes.Contains(status[len(status)-1], []byte(`"state":"offline"`)) {
		t.Errorf("last status message is not offline: %d status messages", len(status))
	}
}

// TestSyncFleetErase: the platform tools sign and send an erase to the
// running binary; its receipt comes back done with counts, fleet tail
// prints what the device publishes, and no byte of the data directory
// holds the subject after the agent stopped.
func TestSyncFleetErase(t *testing.T) {
	r := newSyncRig(t)
	const subject = "+12125550199"
	r.fill(2000, func(i int) string {
		if i%4 == 0 {
			return subject
		}
		return fmt.Sprintf("+1312555%04d", i)
	})
	// The fields are sealed, so the number is never in the file in clear
	// and a search for it cannot tell an erase happened; the officer's
	// scan with the device key can (exit 1: something of the subject
	// reads).
	scan := func() (int, []byte) {
		t.Helper()
		out, err := exec.Command(r.bin, "store", "scan", "--config", r.config, "--subject", subject).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out
		} else if err != nil {
			t.Fatalf("store scan: %v", err)
		}
		return 0, out
	}
	a := r.start("agent")
	pollUntil(t, 30*time.Second, "the backlog at the broker", func() bool { return r.broker.Got.Received() == 2000 })
	// Delivered and acknowledged, the records have left the store's tree,
	// but the pages they lay on are free, not zeroed: the scan, beside
	// the running agent as an officer would run it, still reads them.
	if code, out := scan(); code != 1 || !bytes.Contains(out, []byte("on free page")) {
		t.Fatalf("store scan for %s before the erase: exit %d, want 1 with fields on free pages:\n%s", phone.Mask(subject), code, out)
	}

	tail := exec.Command(r.bin, "fleet", "tail", "--broker", r.broker.URL(), "--device", "pbx-e2e", "-n", "1", "--for", "30s")
	var tailOut bytes.Buffer
	tail.Stdout = &tailOut
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	// fleet tail prints the first line it gets: the retained status.
	r.sendCommand("erase-e2e", "erase", `{"subject":"`+subject+`"}`)
	receipt := r.waitReceipt("erase-e2e")
	// The backlog had gone up before the erase, so there is nothing left
	// to redact (sync's TestEraseEndToEnd erases records still pending);
	// the receipt must still say done, with its counts.
	if !bytes.Contains(receipt, []byte(`"status":"done"`)) || !bytes.Contains(receipt, []byte(`"usage_redacted":`)) {
		t.Errorf("erase receipt %s, want done with counts", receipt)
	}
	// A policy through the same tools: applied (kept for when the SIP
	// proxy runs), answered done, and the status shows its version.
	polFile := filepath.Join(r.dir, "policy.jws")
	pol := r.cli("fleet", "sign", "--key", r.keyFile, "--kid", r.kid, "--type", "policy", "--device", "pbx-e2e",
		"--id", "policy-e2e", "--args", `{"version":7,"pacing":{"cooldown_s":600}}`)
	if err := os.WriteFile(polFile, pol, 0o600); err != nil {
		t.Fatal(err)
	}
	r.cli("fleet", "send", "--broker", r.broker.URL(), "--device", "pbx-e2e", "--policy", "--token", polFile)
	pollUntil(t, 30*time.Second, "the policy's receipt and the status with version 7", func() bool {
		r.broker.Got.Mu.Lock()
		defer r.broker.Got.Mu.Unlock()
		done, status := false, false
		for _, m := range r.broker.Got.Msg["leadport/v1/dev/pbx-e2e/receipt"] {
			done = done || bytes.Contains(m, []byte(`"command_id":"policy-e2e","status":"done"`))
		}
		for _, m := range r.broker.Got.Msg["leadport/v1/dev/pbx-e2e/status"] {
			status = status || bytes.Contains(m, []byte(`"policy_version":7`))
		}
		return done && status
	})
	a.stop(t, syscall.SIGTERM, 15*time.Second)
	if err := tail.Wait(); err != nil {
		t.Errorf("fleet tail: %v", err)
	}
	if !bytes.Contains(tailOut.Bytes(), []byte(`"kind":`)) {
		t.Errorf("fleet tail printed %q, want a JSON line", tailOut.String())
	}
	// Nothing of the subject reads with the device key on any page of the
	// stopped agent's store, and no file spells it.
	if code, out := scan(); code != 0 {
		t.Errorf("store scan for %s after the erase: exit %d, want 0:\n%s", phone.Mask(subject), code, out)
	}
	storetest.AssertErased(t, r.data, subject)
}
