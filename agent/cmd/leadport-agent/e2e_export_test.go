//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// exportReceipt is a receipt as the platform reads it, with an export's
// result.
type exportReceipt struct {
	CommandID string `json:"command_id"`
	Status    string `json:"status"`
	Reason    string `json:"reason"`
	Result    struct {
		Subject string          `json:"subject"`
		Records json.RawMessage `json:"records"`
	} `json:"result"`
	raw json.RawMessage
}

// exportReceiptOf decodes the receipt of command id.
func (r *syncRig) exportReceiptOf(id string) *exportReceipt {
	r.t.Helper()
	raw := r.receipt(id)
	var rc exportReceipt
	if err := json.Unmarshal(raw, &rc); err != nil {
		r.t.Fatalf("receipt %s: %v", raw, err)
	}
	rc.raw = raw
	return &rc
}

// TestSyncExport: the platform tools sign and send an export to the
// running binary while a backlog of the subject's and others' calls is
// still in its store; the receipt that reaches the broker carries exactly
// the subject's records, their personal fields opened, and nothing of
// anyone else. An export of a subject the device holds nothing about is
// answered with an empty list.
func TestSyncExport(t *testing.T) {
	r := newSyncRig(t)
	const n, subject, stranger = 400, "+12125550199", "+19175550100"
	isSubject := func(i int) bool { return i%4 == 1 }
	others := func(i int) string { return fmt.Sprintf("+1312555%04d", i) }
	ids := r.fill(n, func(i int) string {
		if isSubject(i) {
			return subject
		}
		return others(i)
	})
	want := map[string]bool{}
	for i, id := range ids {
		if isSubject(i) {
			want[id] = true
		}
	}
	// The broker takes none of the device's usage batches (no PUBACK), so
	// the whole backlog is still in the device's store when the export
	// runs, however fast the drain: an export of what has already gone
	// would be empty.
	const usageTopic, cmdTopic = "leadport/v1/dev/pbx-e2e/usage", "leadport/v1/dev/pbx-e2e/cmd"
	r.broker.Stall(usageTopic)
	usageAtBroker := func() int {
		r.broker.Got.Mu.Lock()
		defer r.broker.Got.Mu.Unlock()
		return len(r.broker.Got.Seq["usage"])
	}
	a := r.start("agent")
	// The agent subscribes before it publishes its status, on the same
	// connection: once the broker has the status, a command reaches it.
	pollUntil(t, 30*time.Second, "the agent's online status", func() bool {
		r.broker.Got.Mu.Lock()
		defer r.broker.Got.Mu.Unlock()
		for _, m := range r.broker.Got.Msg["leadport/v1/dev/pbx-e2e/status"] {
			if bytes.Contains(m, []byte(`"state":"online"`)) {
				return true
			}
		}
		return a.exited()
	})
	if a.exited() {
		dumpFiles(t, r.dir, filepath.Base(a.log))
		t.Fatalf("agent exited: %v", a.err)
	}
	token := r.sendCommand("export-e2e", "export", `{"subject":"`+subject+`"}`)
	// The agent acknowledges a command once its receipt is stored.
	pollUntil(t, 30*time.Second, "the export acknowledged by the agent", func() bool {
		for _, m := range r.broker.Acked("pbx-e2e", cmdTopic) {
			if bytes.Equal(m.Payload, token) {
				return true
			}
		}
		return false
	})
	if got := usageAtBroker(); got != 0 {
		t.Fatalf("%d usage records reached the broker before the export was answered; want none (the usage topic is stalled)", got)
	}
	// Let the batches through and drop the connection: the agent sends
	// again what the broker never acknowledged, receipts first.
	r.broker.Stall("")
	r.broker.Kick("pbx-e2e")
	pollUntil(t, 30*time.Second, "the export's receipt at the broker", func() bool { return r.receipt("export-e2e") != nil })

	rc := r.exportReceiptOf("export-e2e")
	if rc.Status != "done" || rc.Result.Subject != subject {
		t.Fatalf("export receipt %s, want done for %s", rc.raw, subject)
	}
	var recs []struct {
		ID     string `json:"id"`
		Type   string `json:"type"`
		Remote string `json:"remote"`
	}
	if err := json.Unmarshal(rc.Result.Records, &recs); err != nil {
		t.Fatalf("export records %s: %v", rc.Result.Records, err)
	}
	if len(recs) != len(want) {
		t.Errorf("export holds %d records, want the subject's %d", len(recs), len(want))
	}
	seen := map[string]bool{}
	for _, rec := range recs {
		if !want[rec.ID] || seen[rec.ID] {
			t.Errorf("export holds record %s (type %s, remote %q): not one of the subject's, or twice", rec.ID, rec.Type, rec.Remote)
		}
		seen[rec.ID] = true
		// The personal field opened, not left out or sealed.
		if rec.Type != "usage" || rec.Remote != subject {
			t.Errorf("export record %s: type %s, remote %q; want usage with remote %s", rec.ID, rec.Type, rec.Remote, subject)
		}
	}
	for i := range n {
		if !isSubject(i) && bytes.Contains(rc.raw, []byte(others(i))) {
			t.Fatalf("the export's receipt holds another subject's number %s", others(i))
		}
	}

	// Nothing held about a stranger: done, with an empty list (not null).
	r.sendCommand("export-stranger", "export", `{"subject":"`+stranger+`"}`)
	pollUntil(t, 30*time.Second, "the stranger's export receipt at the broker", func() bool { return r.receipt("export-stranger") != nil })
	rc = r.exportReceiptOf("export-stranger")
	if rc.Status != "done" || rc.Result.Subject != stranger || string(rc.Result.Records) != "[]" {
		t.Errorf("export of a stranger: receipt %s, want done with records []", rc.raw)
	}

	// The stall is over: the backlog goes up after all.
	pollUntil(t, 30*time.Second, "the backlog at the broker", func() bool { return usageAtBroker() == n })
	a.stop(t, syscall.SIGTERM, 15*time.Second)
}
