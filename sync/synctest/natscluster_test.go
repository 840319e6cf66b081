package synctest_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/sync/synctest"
)

// TestSetupBuildsThePinnedNATS: scripts/setup.sh builds the release the
// cluster helper looks for; a bump of one without the other fails here.
func TestSetupBuildsThePinnedNATS(t *testing.T) {
	b, err := os.ReadFile("../../scripts/setup.sh")
	if err != nil {
		t.Fatal(err)
	}
	if want := "nats_version=" + synctest.NATSVersion + "\n"; !strings.Contains(string(b), want) {
		t.Errorf("scripts/setup.sh does not build nats-server %s (no line %q)", synctest.NATSVersion, strings.TrimSpace(want))
	}
}

// TestNATSClusterLosesANode: the helper's cluster is up on three nodes,
// and after one is killed the other two still serve MQTT sessions (the
// JetStream meta group and the MQTT streams keep a quorum), and the node
// comes back.
func TestNATSClusterLosesANode(t *testing.T) {
	c := synctest.StartNATSClusterT(t)
	if len(c.Nodes) != 3 || len(c.MQTTURLs()) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes))
	}
	for _, nd := range c.Nodes {
		if nd.PID() == 0 {
			t.Fatalf("%s not running", nd.Name)
		}
	}
	victim := c.Nodes[0]
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	if victim.Running() || victim.PID() != 0 {
		t.Fatal("the killed node still runs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("two nodes left: %v", err)
	}
	t.Logf("two nodes ready %s after the kill", time.Since(start).Round(time.Millisecond))
	if err := c.Restart(ctx, victim); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if !victim.Running() {
		t.Fatal("the node did not come back")
	}
}
