package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
	"github.com/leadport/leadport-agent/store/storetest"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// eraseMark is a handler that notes how many messages the broker had
// taken when an erase began: every later one must be free of the subject.
type eraseMark struct {
	*handler
	b    *synctest.Broker
	mark int
}

func (h *eraseMark) Execute(ctx context.Context, c *command.Command) lpsync.Outcome {
	if c.Type == command.TypeErase {
		h.b.Got.Mu.Lock()
		h.mark = h.b.Got.Total
		h.b.Got.Mu.Unlock()
	}
	return h.handler.Execute(ctx, c)
}

// TestEraseEndToEnd: a subject with consent records and calls, many of
// them still in the outbox when a signed erase comes through the broker.
// The erase is answered done with its counts; nothing of the subject
// reaches the broker after it (the uploader hands over the outbox only
// once its batches in flight were acknowledged); other subjects' records
// arrive intact. Before the erase a scan of the store file with the device
// key reads the subject; after it, and again at cleanup, it reads nothing
// of it on any page, free ones included (storetest).
func TestEraseEndToEnd(t *testing.T) {
	b := synctest.StartBroker(t)
	p := newPlatform(t, b)
	db := storetest.Open(t)
	const subject = "+12125550199"
	n := 20_000
	if testing.Short() {
		n = 6000
	}
	fill(t, db, n, func(i int) string {
		if i%10 == 3 {
			return subject
		}
		return remoteN(i)
	})
	k := newKeys(t)
	h := &eraseMark{handler: &handler{db: db}, b: b, mark: -1}
	// Small batches, one in flight: the drain is still going when the
	// erase comes, however fast the machine.
	smallBatches = true
	defer func() { smallBatches = false }()
	runClient(t, db, k, h, b.URL())
	waitFor(t, 30*time.Second, "the drain under way", func() bool { return b.Got.Received() >= n/10 })
	// Consent records that come in while usage is being drained wait for
	// the next round: they are pending when the erase comes.
	var consent []store.Payload
	for i := 0; i < 5; i++ {
		consent = append(consent, &store.Consent{Subject: subject, Purpose: "sales-calls", State: "granted", Method: "web",
			CapturedAt: time.Date(2026, 11, 1, 9, i, 0, 0, time.UTC), Evidence: "form-" + subject})
	}
	consent = append(consent, &store.Consent{Subject: "+13125550100", Purpose: "sales-calls", State: "granted", Method: "ivr",
		CapturedAt: time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)})
	if _, err := db.Append(context.Background(), consent...); err != nil {
		t.Fatal(err)
	}
	db.AssertFound(subject)
	p.publish("leadport/v1/dev/"+device+"/cmd", signed(t, k, "platform-2026", cmd("erase-1", "erase", device, `{"subject":"`+subject+`"}`)), false)
	waitFor(t, time.Minute, "the erase answered and the outbox drained", func() bool {
		return countReceipts(t, db, b, "erase-1") == 1 && pending(t, db) == 0
	})
	db.AssertErased(subject)
	rc := receiptsFor(t, db, b, "erase-1")[0]
	var res store.EraseResult
	if err := json.Unmarshal(rc.Result, &res); err != nil || rc.Status != "done" {
		t.Fatalf("receipt %+v (%v)", rc, err)
	}
	if res.ConsentDeleted != 5 || res.UsageRedacted == 0 || !res.KeyDestroyed {
		t.Errorf("erase result %+v, want 5 consent deleted, usage redacted, key destroyed", res)
	}
	if h.mark < 0 {
		t.Fatal("the erase never ran")
	}
	variants := phone.Variants(subject, "1")
	b.Got.Mu.Lock()
	defer b.Got.Mu.Unlock()
	after, other := 0, 0
	for _, m := range b.Got.Order[h.mark:] {
		after++
		for _, v := range variants {
			if bytes.Contains(m, []byte(v)) {
				t.Fatalf("a message the broker took after the erase holds the subject (%q)", v)
			}
		}
		if bytes.Contains(m, []byte("+13125550100")) || bytes.Contains(m, []byte("+12125550004")) {
			other++
		}
	}
	if after == 0 || other == 0 {
		t.Errorf("%d messages after the erase, %d with other subjects' numbers: want both > 0 (the erase came mid-drain, others intact)", after, other)
	}
	t.Logf("erase at message %d of %d; %d usage records redacted", h.mark, b.Got.Total, res.UsageRedacted)
}
