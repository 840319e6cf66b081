//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	gosync "sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
	lpsync "github.com/leadport/leadport-agent/sync"
	lpcommand "github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// The tests of fleet collect run it against real brokers (mochi-mqtt in
// this process, mosquitto, nats-server) with real devices: the agent's
// store with records in its outbox, and the agent's sync client uploading
// them.

// lockedBuffer is a buffer a collector writes while the test reads it.
type lockedBuffer struct {
	mu  gosync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// inProcessCollector is fleet collect running in the test process.
type inProcessCollector struct {
	out            string
	stdout, stderr lockedBuffer
	cancel         context.CancelFunc
	done           chan error
	err            error
}

// startCollector runs fleet collect with args (--out is added) and waits
// until it is subscribed.
func startCollector(t *testing.T, out string, args ...string) *inProcessCollector {
	t.Helper()
	return startCollectorCtx(t, context.Background(), out, args...)
}

// startCollectorCtx is startCollector with test hooks in ctx.
func startCollectorCtx(t *testing.T, ctx context.Context, out string, args ...string) *inProcessCollector {
	t.Helper()
	c := &inProcessCollector{out: out, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	ready := make(chan struct{})
	ctx = context.WithValue(ctx, collectReadyKey{}, ready)
	go func() { c.done <- collect(ctx, append(args, "--out", out, "--json"), &c.stdout, &c.stderr) }()
	t.Cleanup(func() { c.stop(t) })
	select {
	case <-ready:
	case err := <-c.done:
		t.Fatalf("fleet collect %v ended before it was subscribed: %v\n%s", args, err, c.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("fleet collect %v not subscribed within 30 s\n%s", args, c.stderr.String())
	}
	return c
}

// stop cancels the collector (as SIGTERM would) and returns its summary.
func (c *inProcessCollector) stop(t *testing.T) collectSummary {
	t.Helper()
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
		select {
		case c.err = <-c.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("fleet collect did not stop within 30 s\n%s", c.stderr.String())
		}
		if c.err != nil {
			t.Errorf("fleet collect: %v\n%s", c.err, c.stderr.String())
		}
	}
	var s collectSummary
	if err := json.Unmarshal([]byte(c.stdout.String()), &s); err != nil {
		t.Fatalf("summary %q: %v", c.stdout.String(), err)
	}
	return s
}

// collectDevice is a device as the agent runs one: its store, and the
// agent's sync client uploading the outbox in small batches (many batches,
// so that the load has something to share).
type collectDevice struct {
	id   string
	db   *storetest.DB
	sync *lpsync.Client
	ids  []string // every record appended, in order
}

// nopHandler refuses every command: these devices only upload.
type nopHandler struct{}

func (nopHandler) Execute(context.Context, *lpcommand.Command) lpsync.Outcome {
	return lpsync.Outcome{Status: lpsync.Rejected, Reason: string(lpcommand.Unsupported)}
}
func (nopHandler) PolicyVersion() int64 { return 0 }

func newCollectDevice(t *testing.T, id string) *collectDevice {
	return &collectDevice{id: id, db: storetest.Open(t)}
}

// fill appends n records of each kind: usage, consent, violation and
// receipt, every fourth usage record of the subject +12125550188.
func (d *collectDevice) fill(t *testing.T, usage, others int) {
	t.Helper()
	d.ids = append(d.ids, storetest.FillUsage(t, d.db.Store, usage, func(i int) string {
		if i%4 == 0 {
			return "+12125550188"
		}
		return fmt.Sprintf("+1312555%04d", i%10000)
	})...)
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	var ps []store.Payload
	for i := range others {
		ps = append(ps,
			&store.Consent{Subject: fmt.Sprintf("+1646555%04d", i), Purpose: "marketing", State: "granted", Method: "ivr", CapturedAt: at},
			&store.Violation{Rule: "pacing.rate", Line: "+15551230001", Action: "blocked", At: at,
				Evidence: json.RawMessage(`{"attempts_per_minute":9,"limit":6}`), Numbers: []string{fmt.Sprintf("+1718555%04d", i)}},
			&store.Receipt{CommandID: fmt.Sprintf("cmd-%s-%d", d.id, i), Status: "done", At: at, Result: json.RawMessage(`{"usage_redacted":1}`)})
	}
	if len(ps) > 0 {
		got, err := d.db.Append(context.Background(), ps...)
		if err != nil {
			t.Fatal(err)
		}
		d.ids = append(d.ids, got...)
	}
	if d.sync != nil {
		d.sync.Wake()
	}
}

// run starts the device's sync client; it stops at cleanup.
func (d *collectDevice) run(t *testing.T, broker string) {
	t.Helper()
	c, err := lpsync.New(lpsync.Options{
		Brokers: []string{broker}, DeviceID: d.id, Store: d.db.Store,
		Verifier: &lpcommand.Verifier{Device: d.id}, Handler: nopHandler{},
		BatchBytes: 4 << 10, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		Idle: 50 * time.Millisecond, BarrierTimeout: time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.sync = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (d *collectDevice) pending(t *testing.T) int { return d.db.Backlog(t) }

// waitUploaded waits until every device's outbox is empty: every record
// reached the broker, which acknowledged it.
func waitUploaded(t *testing.T, devs ...*collectDevice) {
	t.Helper()
	pollUntil(t, 60*time.Second, "the devices' outboxes empty", func() bool {
		for _, d := range devs {
			if d.pending(t) > 0 {
				return false
			}
		}
		return true
	})
}

// collected reads every line of the record files under the output
// directories, checking each one's form; lines by record id.
func collected(t *testing.T, dirs ...string) map[string][]collectLine {
	t.Helper()
	got := map[string][]collectLine{}
	for _, dir := range dirs {
		for _, typ := range collectTypes() {
			files, _ := filepath.Glob(filepath.Join(dir, typ, "*.jsonl"))
			for _, f := range files {
				fi, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v, want 0600 (records hold phone numbers)", f, fi.Mode().Perm())
				}
				for i, l := range readLines(t, f) {
					var cl collectLine
					if err := json.Unmarshal(l, &cl); err != nil {
						t.Fatalf("%s:%d: %v: %s", f, i+1, err, l)
					}
					var rec struct{ ID, Type string }
					if err := json.Unmarshal(cl.Record, &rec); err != nil || rec.ID != cl.ID || rec.Type != typ || cl.Type != typ ||
						cl.Device == "" || cl.Batch == "" || cl.ReceivedAt.IsZero() {
						t.Fatalf("%s:%d: not a line that stands alone (id, type, device, batch, received_at, the record): %s", f, i+1, l)
					}
					if day := cl.ReceivedAt.UTC().Format(time.DateOnly) + ".jsonl"; day != filepath.Base(f) {
						t.Errorf("%s:%d: received %s, in the file of another day", f, i+1, cl.ReceivedAt)
					}
					got[cl.ID] = append(got[cl.ID], cl)
				}
			}
		}
	}
	return got
}

// readLines returns a file's lines; the file must end with a newline.
func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("%s does not end with a newline", path)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		out = append(out, bytes.Clone(sc.Bytes()))
	}
	return out
}

// hasAll reports whether every id is among the collected lines.
func hasAll(got map[string][]collectLine, devs ...*collectDevice) bool {
	for _, d := range devs {
		for _, id := range d.ids {
			if len(got[id]) == 0 {
				return false
			}
		}
	}
	return true
}

// collectBroker starts a broker for a collector test; acked, when the
// broker can tell (mochi-mqtt), counts the batches of the devices that a
// client acknowledged.
type collectBroker struct {
	name  string
	start func(t *testing.T) (url string, acked func(clientID string) int)
}

// collectBrokers are the brokers the collector tests run through, mochi
// counting the acknowledgements of the given devices' batches.
func collectBrokers(devices ...string) []collectBroker {
	return []collectBroker{
		{"mochi", func(t *testing.T) (string, func(string) int) {
			b := synctest.StartBroker(t)
			return b.URL(), func(clientID string) int {
				n := 0
				for _, typ := range collectTypes() {
					for _, dev := range devices {
						n += len(b.Acked(clientID, "leadport/v1/dev/"+dev+"/"+typ))
					}
				}
				return n
			}
		}},
		{"mosquitto", func(t *testing.T) (string, func(string) int) {
			return synctest.StartMosquittoPersistent(t).URL(), nil
		}},
	}
}

// TestCollectSharedGroup: two collectors in one group share three devices'
// uploads; every record lands exactly once across both outputs, each
// collector took part, and their summaries add up to what the devices
// sent. Through mochi-mqtt and through mosquitto.
func TestCollectSharedGroup(t *testing.T) {
	brokers := collectBrokers("pbx-c1", "pbx-c2", "pbx-c3")
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			url, acked := bk.start(t)
			dir := t.TempDir()
			outA, outB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			a := startCollector(t, outA, "--broker", url, "--group", "ingest", "--instance", "a", "--share-probe", "5s")
			b := startCollector(t, outB, "--broker", url, "--group", "ingest", "--instance", "b", "--share-probe", "5s")

			var devs []*collectDevice
			for i := 1; i <= 3; i++ {
				d := newCollectDevice(t, fmt.Sprintf("pbx-c%d", i))
				d.fill(t, 200, 10)
				d.run(t, url)
				devs = append(devs, d)
			}
			waitUploaded(t, devs...)
			var got map[string][]collectLine
			pollUntil(t, 30*time.Second, "every record in the outputs", func() bool {
				got = collected(t, outA, outB)
				return hasAll(got, devs...)
			})
			sa, sb := a.stop(t), b.stop(t)
			got = collected(t, outA, outB)

			var want, batches uint64
			for _, d := range devs {
				want += uint64(len(d.ids))
				batches += d.sync.Stats().Batches
			}
			for id, ls := range got {
				if len(ls) != 1 {
					t.Errorf("record %s landed %d times, want once", id, len(ls))
				}
			}
			if uint64(len(got)) != want {
				t.Errorf("%d records collected, want %d", len(got), want)
			}
			if sa.Batches == 0 || sb.Batches == 0 {
				t.Errorf("batches a=%d b=%d: both instances should take part", sa.Batches, sb.Batches)
			}
			if uint64(sa.Batches+sb.Batches) != batches || sa.Rejected+sb.Rejected != 0 {
				t.Errorf("summaries: %d+%d batches (%d+%d rejected); the devices sent %d", sa.Batches, sb.Batches, sa.Rejected, sb.Rejected, batches)
			}
			for _, typ := range collectTypes() {
				n := 0
				for _, ls := range got {
					if ls[0].Type == typ {
						n++
					}
				}
				if sa.Records[typ]+sb.Records[typ] != n || n == 0 {
					t.Errorf("%s: summaries say %d+%d records, the files hold %d", typ, sa.Records[typ], sb.Records[typ], n)
				}
			}
			if acked != nil {
				if n := acked(sa.ClientID) + acked(sb.ClientID); uint64(n) != batches {
					t.Errorf("the broker saw %d PUBACKs from the collectors, for %d batches", n, batches)
				}
			}
			t.Logf("%d records in %d batches: a took %d, b %d", want, batches, sa.Batches, sb.Batches)
		})
	}
}

// TestCollectRejects: messages that are not batches of the protocol go to
// rejected/<day>.jsonl with the reason, whole, and are acknowledged (not
// delivered again and again); the log names no phone number whole; a good
// batch after them is taken as usual.
func TestCollectRejects(t *testing.T) {
	broker := synctest.StartBroker(t)
	out := filepath.Join(t.TempDir(), "out")
	c := startCollector(t, out, "--broker", broker.URL(), "--group", "", "--instance", "rejects")

	const number = "+12125550188"
	cases := []struct {
		name, topic, payload, reason string
	}{
		{"not json", "leadport/v1/dev/pbx-r/usage", `{"v":1,"device":"pbx-r","remote":"` + number, "not a batch: JSON syntax error"},
		{"not an object", "leadport/v1/dev/pbx-r/usage", `["` + number + `"]`, "not a batch: a JSON array at the top level"},
		{"no version", "leadport/v1/dev/pbx-r/usage", `{"device":"pbx-r","batch":"b1","records":[]}`, "no version"},
		{"future version", "leadport/v1/dev/pbx-r/usage", `{"v":2,"device":"pbx-r","batch":"b1","records":[]}`, "version 2"},
		{"another device", "leadport/v1/dev/pbx-r/usage", `{"v":1,"device":"pbx-x","batch":"b1","records":[]}`, "the batch's device is not the topic's"},
		{"no batch id", "leadport/v1/dev/pbx-r/consent", `{"v":1,"device":"pbx-r","records":[]}`, "no batch id"},
		{"no records", "leadport/v1/dev/pbx-r/consent", `{"v":1,"device":"pbx-r","batch":"b1"}`, "no records"},
		{"record without id", "leadport/v1/dev/pbx-r/violation", `{"v":1,"device":"pbx-r","batch":"b1","records":[{"id":"r1","type":"violation"},{"type":"violation","numbers":["` + number + `"]}]}`, "record 1: no id"},
		{"record of another type", "leadport/v1/dev/pbx-r/receipt", `{"v":1,"device":"pbx-r","batch":"b1","records":[{"id":"r1","type":"usage"}]}`, "record 0: type is not \"receipt\""},
		{"null record", "leadport/v1/dev/pbx-r/receipt", `{"v":1,"device":"pbx-r","batch":"b1","records":[null]}`, "record 0: no id"},
		{"binary", "leadport/v1/dev/pbx-r/usage", "\xff\xfe\x00" + number, "not a batch"},
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("rejects-publisher").SetProtocolVersion(4))
	if tk := pub.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connect: %v", tk.Error())
	}
	defer pub.Disconnect(250)
	publish := func(topic, payload string) {
		t.Helper()
		if tk := pub.Publish(topic, 1, false, []byte(payload)); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
			t.Fatalf("publish: %v", tk.Error())
		}
	}
	for _, tc := range cases {
		publish(tc.topic, tc.payload)
	}
	// A good batch after the bad ones.
	publish("leadport/v1/dev/pbx-r/usage", `{"v":1,"device":"pbx-r","batch":"good","records":[{"id":"good-1","type":"usage","remote":"`+number+`"}]}`)
	pollUntil(t, 20*time.Second, "the good batch written", func() bool { return len(collected(t, out)["good-1"]) == 1 })
	// Acknowledged, every one: none is left for the broker to send again.
	pollUntil(t, 20*time.Second, "every message acknowledged", func() bool {
		n := 0
		for _, typ := range collectTypes() {
			n += len(broker.Acked(collectClientID("", "rejects"), "leadport/v1/dev/pbx-r/"+typ))
		}
		return n == len(cases)+1
	})
	s := c.stop(t)
	if s.Rejected != len(cases) || s.Batches != 1 || s.Records["usage"] != 1 {
		t.Errorf("summary: %+v; want %d rejected, 1 batch of 1 usage record", s, len(cases))
	}

	files, _ := filepath.Glob(filepath.Join(out, "rejected", "*.jsonl"))
	if len(files) != 1 {
		t.Fatalf("rejected files: %v", files)
	}
	lines := readLines(t, files[0])
	if len(lines) != len(cases) {
		t.Fatalf("%d rejected lines, want %d", len(lines), len(cases))
	}
	for i, tc := range cases {
		var rl rejectLine
		if err := json.Unmarshal(lines[i], &rl); err != nil {
			t.Fatalf("rejected line %d: %v", i, err)
		}
		payload := rl.Payload
		if rl.PayloadBase64 != nil {
			payload = string(rl.PayloadBase64)
		}
		if rl.Topic != tc.topic || rl.Device != "pbx-r" || payload != tc.payload || !strings.Contains(rl.Reason, tc.reason) {
			t.Errorf("%s: rejected line %s; want the topic, the device, the payload whole, a reason with %q", tc.name, lines[i], tc.reason)
		}
	}
	// The rejected file keeps the payloads whole (it is the data, 0600);
	// the log does not.
	if b, _ := os.ReadFile(files[0]); !bytes.Contains(b, []byte(number)) {
		t.Errorf("the rejected file does not keep the payloads whole")
	}
	if log := c.stderr.String(); strings.Contains(log, number) || strings.Count(log, "not a batch; kept in rejected/") != len(cases) {
		t.Errorf("log: want one line per rejected message and no whole number:\n%s", log)
	}
}

// TestCollectNATS: nats-server (the pinned v2.14) takes a $share
// subscription and delivers nothing through it; the probe stops the
// collector with the reason, before it subscribes anything. With --group
// ” a single collector takes every record through NATS.
func TestCollectNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a nats-server")
	}
	url := startNATS(t)
	dir := t.TempDir()

	var stdout, stderr lockedBuffer
	err := collect(context.Background(), []string{"--broker", url, "--out", filepath.Join(dir, "shared"), "--instance", "n1", "--share-probe", "2s"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "does not implement $share") {
		t.Fatalf("fleet collect with a group on NATS: %v; want the probe's refusal", err)
	}

	out := filepath.Join(dir, "single")
	c := startCollector(t, out, "--broker", url, "--group", "", "--instance", "n1")
	d := newCollectDevice(t, "pbx-n1")
	d.fill(t, 200, 5)
	d.run(t, url)
	waitUploaded(t, d)
	pollUntil(t, 30*time.Second, "every record through NATS", func() bool { return hasAll(collected(t, out), d) })
	s := c.stop(t)
	if s.Batches == 0 || s.Records["usage"] != 200 {
		t.Errorf("summary %+v", s)
	}
}

// collectedCount is the number of lines in the record files under dir.
func collectedCount(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(p, ".jsonl") && !strings.Contains(p, "rejected") {
			b, _ := os.ReadFile(p)
			n += bytes.Count(b, []byte{'\n'})
		}
		return nil
	})
	return n
}

// startNATS runs the pinned nats-server (synctest.NATSServerPath), one
// node with JetStream and MQTT, and returns its MQTT URL once it takes an
// MQTT session.
func startNATS(t *testing.T) string {
	t.Helper()
	bin := synctest.NATSServerPath()
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("LEADPORT_E2E") == "1" {
			t.Fatalf("nats-server %s is not at %s (scripts/setup.sh builds it)", synctest.NATSVersion, bin)
		}
		t.Skipf("nats-server %s is not at %s (scripts/setup.sh builds it)", synctest.NATSVersion, bin)
	}
	dir := t.TempDir()
	mqttAddr := synctest.FreeAddr(t)
	conf := filepath.Join(dir, "nats.conf")
	writeFile(t, conf, fmt.Sprintf("server_name: collect\nlisten: %s\njetstream { store_dir: %q }\nmqtt { listen: %s }\n",
		synctest.FreeAddr(t), filepath.Join(dir, "js"), mqttAddr))
	p := startLogged(t, dir, "nats-server", bin, "-c", conf)
	t.Cleanup(func() {
		if t.Failed() {
			dumpFiles(t, dir, "nats-server.log")
		}
	})
	url := "tcp://" + mqttAddr
	pollUntil(t, 30*time.Second, "nats-server taking an MQTT session", func() bool {
		if p.exited() {
			dumpFiles(t, dir, "nats-server.log")
			t.Fatalf("nats-server exited: %v", p.err)
		}
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("ready-probe").SetProtocolVersion(4).
			SetConnectTimeout(2 * time.Second).SetConnectRetry(false).SetAutoReconnect(false))
		tk := c.Connect()
		if !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
			return false
		}
		c.Disconnect(0)
		return true
	})
	return url
}

// TestCollectReconnect: the collector's connection is cut twice in the
// middle of an upload (the broker keeps its session), then the broker
// restarts: the collector reconnects by itself, subscribes again, and every
// record lands. Through mosquitto (keeping its sessions across the restart)
// and mochi-mqtt (losing them: the subscriptions must be made again). The
// cuts go through mosquitto only: mochi-mqtt 2.7.9 loses a QoS 1 message
// that arrives while it hands a session over to the returning client
// (docs/fleet.md, "fleet collect").
func TestCollectReconnect(t *testing.T) {
	brokers := []struct {
		name  string
		cuts  int
		start func(t *testing.T) (url string, restart func())
	}{
		{"mosquitto", 2, func(t *testing.T) (string, func()) {
			m := synctest.StartMosquittoPersistent(t)
			return m.URL(), func() { m.Stop(); m.Start() }
		}},
		{"mochi", 0, func(t *testing.T) (string, func()) {
			b := synctest.StartBroker(t)
			return b.URL(), func() { b.Stop(); b.Start() }
		}},
	}
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			url, restart := bk.start(t)
			gate := synctest.NewGate(t, strings.TrimPrefix(url, "tcp://"))
			out := filepath.Join(t.TempDir(), "out")
			// The writer is held, once per cut, with a round written and
			// fsynced but not acknowledged: the cut then always finds
			// batches in flight, however fast the collector is.
			hold := &ackHold{}
			ctx := context.WithValue(context.Background(), collectBeforeAckKey{}, hold.beforeAck)
			c := startCollectorCtx(t, ctx, out, "--broker", gate.URL(), "--group", "ingest", "--instance", "r")
			d := newCollectDevice(t, "pbx-r1")
			d.fill(t, 3000, 10)
			devGate := synctest.NewGate(t, strings.TrimPrefix(url, "tcp://"))
			if bk.cuts == 0 {
				d.run(t, devGate.URL())
			}
			back := func() int { return strings.Count(c.stderr.String(), "reconnected and subscribed") }
			for cut := 1; cut <= bk.cuts; cut++ {
				// In the middle of the upload: some records written, not
				// all of them.
				reached, release := hold.arm(600 * cut)
				if cut == 1 {
					d.run(t, devGate.URL())
				}
				select {
				case <-reached:
				case <-time.After(30 * time.Second):
					t.Fatalf("cut %d: the collector never held a written round before acknowledging it", cut)
				}
				gate.Shut()
				gate.Open()
				close(release)
				pollUntil(t, 30*time.Second, fmt.Sprintf("the collector back after cut %d", cut), func() bool { return back() == cut })
			}
			waitUploaded(t, d)
			pollUntil(t, 30*time.Second, "every record", func() bool { return hasAll(collected(t, out), d) })

			// Both kept away while the broker restarts: a connection that
			// lands on a broker in the middle of its restart may get no
			// CONNACK, and the client would wait out its connect timeout
			// (15 s).
			gate.Shut()
			devGate.Shut()
			restart()
			gate.Open()
			devGate.Open()
			pollUntil(t, 60*time.Second, "the collector subscribed again after the broker's restart", func() bool { return back() == bk.cuts+1 })
			d.fill(t, 300, 0)
			waitUploaded(t, d)
			pollUntil(t, 30*time.Second, "every record after the broker's restart", func() bool { return hasAll(collected(t, out), d) })
			s := c.stop(t)
			t.Logf("%d records, %d batches, %d redelivered", len(d.ids), s.Batches, s.Redelivered)
			if bk.cuts > 0 && s.Redelivered == 0 {
				t.Errorf("no batch came again after %d cuts, each with a round written and not acknowledged", bk.cuts)
			}
		})
	}
}

// ackHold holds the collector's writer once, after a given number of
// records, between a durable round and its acknowledgements.
type ackHold struct {
	mu       sync.Mutex
	written  int
	at       int
	reached  chan struct{}
	released chan struct{}
}

// arm holds the first round that takes the records written to at least
// at: reached closes when the writer waits, and closing release lets it go.
func (h *ackHold) arm(at int) (reached, release chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.at, h.reached, h.released = at, make(chan struct{}), make(chan struct{})
	return h.reached, h.released
}

func (h *ackHold) beforeAck(records int) {
	h.mu.Lock()
	h.written += records
	var reached, release chan struct{}
	if h.reached != nil && h.written >= h.at {
		reached, release = h.reached, h.released
		h.reached = nil
	}
	h.mu.Unlock()
	if reached != nil {
		close(reached)
		<-release
	}
}

// TestCollectLeave: an instance stopped for good keeps its share queued in
// its session (the broker goes on choosing it). --leave takes it out: it
// writes what its session held, unsubscribes, ends the session, and from
// then on the group's other instance takes every record.
func TestCollectLeave(t *testing.T) {
	broker := synctest.StartBroker(t)
	dir := t.TempDir()
	outA, outB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := startCollector(t, outA, "--broker", broker.URL(), "--group", "ingest", "--instance", "a")
	b := startCollector(t, outB, "--broker", broker.URL(), "--group", "ingest", "--instance", "b")
	d := newCollectDevice(t, "pbx-l1")
	d.run(t, broker.URL())
	d.fill(t, 300, 0)
	waitUploaded(t, d)
	pollUntil(t, 30*time.Second, "every record", func() bool { return hasAll(collected(t, outA, outB), d) })

	b.stop(t) // its session stays, and keeps its share of what comes now
	d.fill(t, 600, 10)
	waitUploaded(t, d)

	var stdout, stderr lockedBuffer
	err := collect(context.Background(), []string{"--broker", broker.URL(), "--group", "ingest", "--instance", "b",
		"--out", outB, "--leave", "--settle", "300ms", "--json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("fleet collect --leave: %v\n%s", err, stderr.String())
	}
	var left collectSummary
	if err := json.Unmarshal([]byte(stdout.String()), &left); err != nil {
		t.Fatalf("summary %q: %v", stdout.String(), err)
	}
	if left.Batches == 0 {
		t.Errorf("--leave wrote nothing: b's session held no share (summary %+v)", left)
	}
	pollUntil(t, 30*time.Second, "every record after b left", func() bool { return hasAll(collected(t, outA, outB), d) })

	// b is out of the group: a takes everything.
	before, first := collectedCount(outB), len(d.ids)
	d.fill(t, 300, 0)
	waitUploaded(t, d)
	pollUntil(t, 30*time.Second, "every new record, through a alone", func() bool {
		got := collected(t, outA)
		for _, id := range d.ids[first:] {
			if len(got[id]) == 0 {
				return false
			}
		}
		return true
	})
	if n := collectedCount(outB); n != before {
		t.Errorf("b's output grew after it left: %d -> %d lines", before, n)
	}
	sa := a.stop(t)
	t.Logf("b drained %d batches when it left; a took %d in all", left.Batches, sa.Batches)
}
