//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// fleetRig is a fleet of real agent processes against a real mosquitto
// keeping its sessions, and the platform tools of the same binary.
type fleetRig struct {
	t       *testing.T
	bin     string
	dir     string
	broker  *synctest.Mosquitto
	keyFile string
	kid     string
	pub     string
}

func newFleetRig(t *testing.T) *fleetRig {
	r := &fleetRig{t: t, bin: buildAgent(t), dir: t.TempDir(), broker: synctest.StartMosquittoPersistent(t)}
	r.keyFile = filepath.Join(r.dir, "platform.key")
	out, _ := r.run("fleet", "keygen", "--out", r.keyFile, "--kid", "platform-fleet")
	var kg struct {
		Kid       string `json:"kid"`
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(out, &kg); err != nil {
		t.Fatalf("keygen output %q: %v", out, err)
	}
	r.kid, r.pub = kg.Kid, kg.PublicKey
	return r
}

// config writes a device's configuration and returns its path.
func (r *fleetRig) config(dev string) string {
	dir := filepath.Join(r.dir, dev)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		r.t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.yaml")
	writeFile(r.t, path, fmt.Sprintf(`device_id: %s
data_dir: %s
default_country: "1"
mqtt:
  brokers: [%q]
  status_interval_s: 5
commands:
  trusted_keys: {%s: %q}
api: {socket: %s}
log: {level: debug}
`, dev, filepath.Join(dir, "data"), r.broker.URL(), r.kid, r.pub, filepath.Join(dir, "api.sock")))
	return path
}

func (r *fleetRig) start(dev string) *proc {
	return startLogged(r.t, filepath.Join(r.dir, dev), dev, r.bin, "run", "--config", r.config(dev))
}

// run runs the binary and returns its stdout and exit code.
func (r *fleetRig) run(args ...string) ([]byte, int) {
	r.t.Helper()
	cmd := exec.Command(r.bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out, 0
	case errors.As(err, &ee):
		r.t.Logf("leadport-agent %s: exit %d\n%s", args[0:2], ee.ExitCode(), stderr.String())
		return out, ee.ExitCode()
	}
	r.t.Fatalf("leadport-agent %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	return nil, 0
}

func (r *fleetRig) roster() map[string]device {
	r.t.Helper()
	out, code := r.run("fleet", "devices", "--broker", r.broker.URL(), "--json", "--settle", "300ms")
	if code != 0 {
		r.t.Fatalf("fleet devices: exit %d", code)
	}
	var ds []device
	if err := json.Unmarshal(out, &ds); err != nil {
		r.t.Fatalf("fleet devices output %q: %v", out, err)
	}
	m := map[string]device{}
	for _, d := range ds {
		m[d.Device] = d
	}
	return m
}

type eraseOutput struct {
	Devices []eraseView `json:"devices"`
	Done    int         `json:"done"`
	Pending int         `json:"pending"`
}

// TestFleetEraseOfflineDevice: two real agents; the roster shows them;
// one is stopped, and its subject's records wait in its store while the
// erase is sent. The first run of fleet erase reports the online device
// done and the other pending (exit 1). The stopped agent starts again,
// takes the erase queued in its session before it uploads, and the rerun
// of fleet erase, sending nothing again, reports it done with its counts
// (exit 0).
func TestFleetEraseOfflineDevice(t *testing.T) {
	r := newFleetRig(t)
	a := r.start("pbx-a")
	b := r.start("pbx-b")
	var last map[string]device
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last roster: %+v", last)
			dumpFiles(t, filepath.Join(r.dir, "pbx-a"), "pbx-a.log")
			dumpFiles(t, filepath.Join(r.dir, "pbx-b"), "pbx-b.log")
		}
	})
	pollUntil(t, 30*time.Second, "both devices online in the roster", func() bool {
		ros := r.roster()
		last = ros
		return ros["pbx-a"].State == "online" && ros["pbx-b"].State == "online" && ros["pbx-b"].KeyID != ""
	})
	ros := r.roster()
	for _, d := range []string{"pbx-a", "pbx-b"} {
		got := ros[d]
		if got.Version != "v9.9.9-test" || got.LastSeen.IsZero() || got.Backlog == nil || got.KeyID == "" {
			t.Errorf("roster line of %s = %+v; want version, last seen, backlog, key id", d, got)
		}
	}
	text, _ := r.run("fleet", "devices", "--broker", r.broker.URL(), "--settle", "300ms")
	if !bytes.Contains(text, []byte("pbx-a")) || !bytes.Contains(text, []byte("2 devices")) {
		t.Errorf("fleet devices table:\n%s", text)
	}

	b.stop(t, syscall.SIGTERM, 15*time.Second)
	pollUntil(t, 10*time.Second, "pbx-b offline in the roster", func() bool { return r.roster()["pbx-b"].State == "offline" })
	// The subject called pbx-b while it was off: five records wait in its
	// store.
	const subject = "+12125550188"
	st, err := store.Open(store.Options{Dir: filepath.Join(r.dir, "pbx-b", "data"), DefaultCountry: "1"})
	if err != nil {
		t.Fatal(err)
	}
	storetest.FillUsage(t, st, 20, func(i int) string {
		if i%4 == 0 {
			return subject
		}
		return fmt.Sprintf("+1312555%04d", i)
	})
	if exp, err := st.Export(subject); err != nil || len(exp) != 5 {
		t.Fatalf("export before = %d, %v; want 5", len(exp), err)
	}
	st.Close()

	ledger := filepath.Join(r.dir, "erase.json")
	erase := func(wait string, which ...string) (eraseOutput, []byte, int) {
		t.Helper()
		if which == nil {
			which = []string{"--device", "pbx-a", "--device", "pbx-b"}
		}
		args := append([]string{"fleet", "erase", "--broker", r.broker.URL(), "--key", r.keyFile, "--kid", r.kid,
			"--subject", subject, "--wait", wait, "--ledger", ledger, "--json"}, which...)
		out, code := r.run(args...)
		var eo eraseOutput
		if err := json.Unmarshal(out, &eo); err != nil {
			t.Fatalf("fleet erase output %q: %v", out, err)
		}
		return eo, out, code
	}
	first, out, code := erase("5s")
	if code != 1 || first.Done != 1 || first.Pending != 1 {
		t.Fatalf("first run: exit %d, %d done, %d pending; want exit 1, 1 done (pbx-a), 1 pending (pbx-b)\n%s", code, first.Done, first.Pending, out)
	}
	if bytes.Contains(out, []byte(subject)) {
		t.Errorf("fleet erase printed the whole number:\n%s", out)
	}

	b = r.start("pbx-b")
	second, out, code := erase("30s")
	if code != 0 || second.Done != 2 {
		t.Fatalf("rerun: exit %d, %d done; want exit 0, both done\n%s", code, second.Done, out)
	}
	for _, v := range second.Devices {
		if v.Device != "pbx-b" {
			continue
		}
		var res store.EraseResult
		if err := json.Unmarshal(v.Result, &res); err != nil || res.UsageRedacted != 5 || !res.KeyDestroyed {
			t.Errorf("pbx-b receipt result %s: want usage_redacted 5 and the key destroyed (the erase ran before the upload)", v.Result)
		}
	}
	// The rerun sent nothing again: the command waited in pbx-b's session.
	var led eraseLedger
	if b, err := os.ReadFile(ledger); err != nil || json.Unmarshal(b, &led) != nil {
		t.Fatalf("ledger: %v", err)
	}
	for d, e := range led.Devices {
		if e.Sends != 1 {
			t.Errorf("%s: command sent %d times, want 1", d, e.Sends)
		}
	}
	// A third run, over the roster, finds everything done and sends
	// nothing.
	if third, out, code := erase("1s", "--all"); code != 0 || third.Done != 2 || len(third.Devices) != 2 {
		t.Errorf("third run (--all): exit %d, %d done of %d; want 0, 2 of 2\n%s", code, third.Done, len(third.Devices), out)
	}
	if b, err := os.ReadFile(ledger); err != nil || json.Unmarshal(b, &led) != nil {
		t.Fatalf("ledger: %v", err)
	}
	for d, e := range led.Devices {
		if e.Sends != 1 {
			t.Errorf("after the third run, %s: command sent %d times, want 1", d, e.Sends)
		}
	}
	a.stop(t, syscall.SIGTERM, 15*time.Second)
	b.stop(t, syscall.SIGTERM, 15*time.Second)
}
