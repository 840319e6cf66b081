//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// TestSyncNATSClusterNodeLoss: the real binary, configured with the three
// nodes of a NATS cluster in mqtt.brokers, drains a backlog; the node it
// is on is SIGKILLed in the middle. Every record reaches the platform
// (which reads with a session the cluster keeps), the agent goes on
// through another node, and an erase sent afterwards through a surviving
// node is answered once.
func TestSyncNATSClusterNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a cluster node and waits out its elections")
	}
	cl := synctest.StartNATSClusterT(t)
	urls := cl.MQTTURLs()
	bin := buildAgent(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	keyFile := filepath.Join(dir, "platform.key")
	var kg struct {
		Kid       string `json:"kid"`
		PublicKey string `json:"public_key"`
	}
	out, err := natsRunBin(bin, "fleet", "keygen", "--out", keyFile, "--kid", "platform-e2e")
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	if err := json.Unmarshal(out, &kg); err != nil {
		t.Fatalf("keygen output %q: %v", out, err)
	}
	brokers, _ := json.Marshal(urls)
	config := filepath.Join(dir, "agent.yaml")
	writeFile(t, config, fmt.Sprintf(`device_id: pbx-e2e
data_dir: %s
default_country: "1"
mqtt:
  brokers: %s
  status_interval_s: 5
commands:
  trusted_keys: {%s: %q}
api: {socket: %s}
log: {level: debug}
`, data, brokers, kg.Kid, kg.PublicKey, filepath.Join(dir, "api.sock")))

	n := 30_000
	st, err := store.Open(store.Options{Dir: data, DefaultCountry: "1"})
	if err != nil {
		t.Fatal(err)
	}
	ids := storetest.FillUsage(t, st, n, func(i int) string { return fmt.Sprintf("+1212555%04d", i%10000) })
	st.Close()

	// The platform: a session the cluster keeps, on the last node first.
	col := synctest.NewCollector(t)
	opts := paho.NewClientOptions().SetClientID("platform-e2e").SetCleanSession(false).SetAutoReconnect(true).
		SetMaxReconnectInterval(500 * time.Millisecond).SetResumeSubs(true).
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe("leadport/v1/dev/pbx-e2e/+", 1, func(_ paho.Client, m paho.Message) { col.Add(m.Topic(), m.Payload()) })
		})
	for _, u := range append([]string{urls[2]}, urls[:2]...) {
		opts.AddBroker(u)
	}
	plat := paho.NewClient(opts)
	if tok := plat.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("platform: %v", tok.Error())
	}
	t.Cleanup(func() { plat.Disconnect(100) })

	a := startLogged(t, dir, "agent", bin, "run", "--config", config)
	pollUntil(t, time.Minute, "a fifth of the backlog at the platform", func() bool { return col.Received() >= n/5 || a.exited() })
	if a.exited() {
		dumpFiles(t, dir, "agent.log")
		t.Fatalf("agent exited: %v", a.err)
	}
	ctx := context.Background()
	nd, err := cl.NodeOf(ctx, "pbx-e2e")
	if err != nil || nd == nil {
		t.Fatalf("the agent's node: %v, %v", nd, err)
	}
	if err := cl.Kill(nd); err != nil {
		t.Fatal(err)
	}
	killed, before := time.Now(), col.Received()
	if before >= n {
		t.Fatalf("the kill came after the drain: the platform had all %d records", before)
	}
	pollUntil(t, 2*time.Minute, "every record at the platform after the kill", func() bool { return col.Received() == n })
	t.Logf("killed %s with %d of %d records at the platform; the rest there %s later", nd.Name, before, n, time.Since(killed).Round(time.Millisecond))
	now, err := cl.NodeOf(ctx, "pbx-e2e")
	if err != nil || now == nil || now == nd {
		t.Fatalf("after the kill the agent is on %v (%v), want another node", now, err)
	}

	// An erase through a surviving node, answered once.
	var live string
	for _, u := range urls {
		if !strings.Contains(u, nd.MQTT) {
			live = u
			break
		}
	}
	token, err := natsRunBin(bin, "fleet", "sign", "--key", keyFile, "--kid", kg.Kid, "--type", "erase", "--device", "pbx-e2e",
		"--id", "cluster-erase", "--args", `{"subject":"+12125550007"}`)
	if err != nil {
		t.Fatalf("sign: %v\n%s", err, token)
	}
	tokFile := filepath.Join(dir, "erase.jws")
	writeFile(t, tokFile, strings.TrimSpace(string(token)))
	if out, err := natsRunBin(bin, "fleet", "send", "--broker", live, "--device", "pbx-e2e", "--token", tokFile); err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	receipts := func() int {
		col.Mu.Lock()
		defer col.Mu.Unlock()
		seen := map[string]bool{}
		for _, p := range col.Msg["leadport/v1/dev/pbx-e2e/receipt"] {
			var b struct {
				Records []struct {
					ID        string `json:"id"`
					CommandID string `json:"command_id"`
					Status    string `json:"status"`
				}
			}
			if json.Unmarshal(p, &b) != nil {
				continue
			}
			for _, r := range b.Records {
				if r.CommandID == "cluster-erase" && r.Status == "done" {
					seen[r.ID] = true
				}
			}
		}
		return len(seen)
	}
	pollUntil(t, 30*time.Second, "the erase's receipt", func() bool { return receipts() > 0 })
	a.stop(t, syscall.SIGTERM, 15*time.Second)
	if got := receipts(); got != 1 {
		t.Errorf("%d receipts for the erase, want 1", got)
	}
	t.Logf("%d records, %d duplicate copies across the node loss", n, col.Duplicates(ids))
}

// natsRunBin runs the binary and returns its stdout, with its stderr
// added when it fails.
func natsRunBin(bin string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return append(out, stderr.Bytes()...), err
	}
	return out, nil
}
