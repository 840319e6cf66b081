//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestCollectSIGKILL: two collectors share a device's uploads; one, the
// real binary, is frozen (SIGSTOP) while batches keep coming, so the broker
// has sent it batches it never acknowledged, and is then SIGKILLed. More
// records come while it is dead (the broker keeps its share in its
// session). Started again under the same instance name, it takes both back:
// every record is in one of the two outputs, duplicates are only copies
// of records it wrote and did not acknowledge, and every file ends with a
// whole line.
func TestCollectSIGKILL(t *testing.T) {
	brokers := collectBrokers("pbx-k1")
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			url, acked := bk.start(t)
			testCollectSIGKILL(t, url, acked)
		})
	}
}

// testCollectSIGKILL runs the test through the broker at url; acked, when
// the broker can tell, counts the batches a client acknowledged.
func testCollectSIGKILL(t *testing.T, url string, acked func(clientID string) int) {
	bin := buildAgent(t)
	dir := t.TempDir()
	outA, outB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := startCollector(t, outA, "--broker", url, "--group", "ingest", "--instance", "a")
	args := []string{"fleet", "collect", "--broker", url, "--group", "ingest", "--instance", "b", "--out", outB, "--json"}
	startB := func(name string) *proc {
		p := startLogged(t, dir, name, bin, args...)
		pollUntil(t, 30*time.Second, name+" subscribed", func() bool {
			if p.exited() {
				dumpFiles(t, dir, name+".log")
				t.Fatalf("%s exited: %v", name, p.err)
			}
			b, _ := os.ReadFile(p.log)
			return bytes.Contains(b, []byte("fleet collect: collecting"))
		})
		return p
	}
	b := startB("collector-b1")
	clientA, clientB := collectClientID("ingest", "a"), collectClientID("ingest", "b")

	d := newCollectDevice(t, "pbx-k1")
	d.fill(t, 1000, 0)
	d.run(t, url)
	pollUntil(t, 30*time.Second, "b writing", func() bool { return collectedCount(outB) > 0 })

	// Frozen: what the broker sends b now waits unread, unacknowledged.
	if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	d.fill(t, 1000, 20)
	waitUploaded(t, d)
	sent := func() int { return int(d.sync.Stats().Batches) }
	if acked != nil {
		// The batches the broker sent b since it froze are unacknowledged
		// (the restarted b's count of redelivered messages shows they
		// were b's).
		if n := sent() - acked(clientA) - acked(clientB); n == 0 {
			t.Fatalf("every batch acknowledged before the kill: it would interrupt nothing")
		}
	}
	b.stop(t, syscall.SIGKILL, 10*time.Second)

	// While b is dead, its share waits in its session.
	d.fill(t, 500, 0)
	waitUploaded(t, d)

	b = startB("collector-b2")
	var got map[string][]collectLine
	pollUntil(t, 30*time.Second, "every record in the outputs after the restart", func() bool {
		got = collected(t, outA, outB)
		return hasAll(got, d)
	})
	if acked != nil {
		pollUntil(t, 30*time.Second, "every batch acknowledged", func() bool { return acked(clientA)+acked(clientB) >= sent() })
	}
	b.stop(t, syscall.SIGTERM, 15*time.Second)
	sa := a.stop(t)
	var sb collectSummary
	logB, _ := os.ReadFile(b.log)
	if i := bytes.LastIndex(logB, []byte(`{"client_id"`)); i < 0 || json.Unmarshal(logB[i:], &sb) != nil {
		t.Fatalf("no summary from b:\n%s", logB)
	}
	got = collected(t, outA, outB) // every file ends with a whole line, every line parses
	dups := 0
	for id, ls := range got {
		dups += len(ls) - 1
		if len(ls) > 1 && ls[0].Batch != ls[1].Batch {
			// The device sent each batch once (the broker acknowledged
			// it): a copy is the same batch, delivered again.
			t.Errorf("record %s in batches %s and %s", id, ls[0].Batch, ls[1].Batch)
		}
	}
	if len(got) != len(d.ids) {
		t.Errorf("%d records collected, want %d", len(got), len(d.ids))
	}
	if sb.Redelivered == 0 {
		t.Errorf("the restarted b saw no redelivered message; summary %+v", sb)
	}
	t.Logf("%d records in %d batches; %d duplicate copies (written by b before the kill, not acknowledged); a took %d batches, restarted b %d (%d redelivered)",
		len(d.ids), sent(), dups, sa.Batches, sb.Batches, sb.Redelivered)
}
