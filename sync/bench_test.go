package sync_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// benchRecords is the backlog size: LEADPORT_BENCH_RECORDS, default
// 100,000 (issue 5).
func benchRecords() int {
	if n, err := strconv.Atoi(os.Getenv("LEADPORT_BENCH_RECORDS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// BenchmarkDrainMosquitto drains a backlog to Debian's mosquitto on
// loopback (no TLS) and, in the same run, publishes the same bytes with
// raw paho (QoS 1, the same eight batches in flight): records/s for both
// and the ratio. Run with -benchtime 1x (scripts/bench-sync.sh).
// Targets: >= 20,000 records/s and >= 0.8 of raw paho.
func BenchmarkDrainMosquitto(b *testing.B) {
	n := benchRecords()
	for i := 0; i < b.N; i++ {
		m := synctest.StartMosquittoPlain(b)
		url := "tcp://" + m.Addr

		// The bytes the agent sends: the batches of a drain, built the
		// same way from a store holding the same records.
		db := storetest.Open(b)
		fill(b, db, n, remoteN)
		payloads := batchesOf(b, db)

		rawStart := time.Now()
		rawPublish(b, url, payloads)
		raw := time.Since(rawStart)

		k := newKeys(b)
		start := time.Now()
		syncClient(b, db, k, &handler{db: db}, url, nil)
		waitFor(b, 5*time.Minute, "the drain", func() bool { return pending(b, db) == 0 })
		agent := time.Since(start)

		agentRate := float64(n) / agent.Seconds()
		rawRate := float64(n) / raw.Seconds()
		b.ReportMetric(agentRate, "records/s")
		b.ReportMetric(rawRate, "raw-records/s")
		b.ReportMetric(agentRate/rawRate, "ratio")
		fmt.Fprintf(os.Stderr, "drain of %d records to mosquitto: agent %.0f records/s (%s), raw paho %.0f records/s (%s), ratio %.2f; %d batches\n",
			n, agentRate, agent.Round(time.Millisecond), rawRate, raw.Round(time.Millisecond), agentRate/rawRate, len(payloads))
	}
}

// batchesOf builds the batch payloads a drain of db would publish.
func batchesOf(b testing.TB, db *storetest.DB) [][]byte {
	recs, err := db.Pending(store.TypeUsage, store.ReadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var out [][]byte
	var buf bytes.Buffer
	open := func() {
		buf.Reset()
		buf.WriteString(`{"v":1,"device":"pbx-0042","batch":"01JBENCH00000000000000000","records":[`)
	}
	open()
	first := true
	for _, r := range recs {
		j, err := json.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		if !first && buf.Len()+len(j)+3 > 256<<10 {
			buf.WriteString("]}")
			out = append(out, append([]byte(nil), buf.Bytes()...))
			open()
			first = true
		}
		if !first {
			buf.WriteByte(',')
		}
		buf.Write(j)
		first = false
	}
	buf.WriteString("]}")
	return append(out, append([]byte(nil), buf.Bytes()...))
}

// rawPublish sends the payloads with plain paho, eight in flight.
func rawPublish(b testing.TB, url string, payloads [][]byte) {
	opts := paho.NewClientOptions().AddBroker(url).SetClientID("raw-bench").SetCleanSession(true)
	c := paho.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatalf("raw connect: %v", t.Error())
	}
	defer c.Disconnect(100)
	var inflight []paho.Token
	for _, p := range payloads {
		inflight = append(inflight, c.Publish("leadport/v1/dev/raw/usage", 1, false, p))
		if len(inflight) >= 8 {
			if !inflight[0].WaitTimeout(30*time.Second) || inflight[0].Error() != nil {
				b.Fatal("raw publish not acknowledged")
			}
			inflight = inflight[1:]
		}
	}
	for _, t := range inflight {
		if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
			b.Fatal("raw publish not acknowledged")
		}
	}
}

// BenchmarkEraseLarge: a signed erase through the broker to its done
// receipt, with 1,000,000 records stored (LEADPORT_BENCH_STORED), 1 in
// 1,000 of them the subject's. The command is sent as soon as the client
// is up; the erase takes the outbox from the uploader after at most the
// batches in flight, so nearly all records are still stored when it runs.
func BenchmarkEraseLarge(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("LEADPORT_BENCH_STORED")); err == nil && v > 0 {
		n = v
	}
	const subject = "+12125550199"
	for i := 0; i < b.N; i++ {
		br := synctest.StartBroker(b)
		db := storetest.Open(b, func(o *store.Options) { o.MaxSize = 4 << 30 })
		fill(b, db, n, func(i int) string {
			if i%1000 == 7 {
				return subject
			}
			return remoteN(i)
		})
		st, _ := db.Stats()
		k := newKeys(b)
		p := newPlatform(b, br)
		syncClient(b, db, k, &handler{db: db}, br.URL(), nil)
		start := time.Now()
		p.publish("leadport/v1/dev/"+device+"/cmd", signed(b, k, "platform-2026", cmd("erase-big", "erase", device, `{"subject":"`+subject+`"}`)), false)
		var rc *store.Receipt
		waitFor(b, 20*time.Minute, "the erase receipt", func() bool {
			if rs := receiptsFor(b, db, br, "erase-big"); len(rs) > 0 {
				rc = rs[0]
				return true
			}
			return false
		})
		took := time.Since(start)
		b.ReportMetric(took.Seconds(), "s/erase")
		fmt.Fprintf(os.Stderr, "erase of a subject with %d records stored (%d MiB file): command to receipt %s, receipt %s %s\n",
			n, st.SizeBytes>>20, took.Round(time.Millisecond), rc.Status, rc.Result)
	}
}
