package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
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
// loopback (no TLS): records/s, and the CPU the agent's side (store and
// sync client, this process) spends per record. Run with -benchtime 1x
// (scripts/bench-sync.sh). Targets (issue 16): >= 100,000 records/s and
// <= 3 us of CPU per record. The ratio against raw paho publishing the same
// bytes is retired: it compared a durable, encrypted store against bytes
// already in memory. The collector runs as in the agent (agentGC).
func BenchmarkDrainMosquitto(b *testing.B) {
	agentGC(b)
	n := benchRecords()
	for i := 0; i < b.N; i++ {
		m := synctest.StartMosquittoPlain(b)
		url := "tcp://" + m.Addr
		db := benchStore(b)
		fill(b, db, n, remoteN)
		// The fill's garbage is not the drain's to collect, nor its
		// freed memory the drain's to give back to the OS.
		debug.FreeOSMemory()

		k := newKeys(b)
		// LEADPORT_DRAIN_PROFILE: a CPU profile of the drain alone.
		if path := os.Getenv("LEADPORT_DRAIN_PROFILE"); path != "" {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				b.Fatal(err)
			}
			writeHeap(b, path+".heap0")
		}
		cpu0, flt0 := cpuTime(b), faults(b)
		start := time.Now()
		c := syncClient(b, db, k, &handler{db: db}, url, nil)
		waitFor(b, 5*time.Minute, "the drain", func() bool { return pending(b, db) == 0 })
		took := time.Since(start)
		cpu, flt := cpuTime(b)-cpu0, faults(b)-flt0
		if os.Getenv("LEADPORT_DRAIN_PROFILE") != "" {
			pprof.StopCPUProfile()
			// The drain's allocations: go tool pprof -sample_index
			// alloc_space -base PATH.heap0 PATH.heap1.
			writeHeap(b, os.Getenv("LEADPORT_DRAIN_PROFILE")+".heap1")
		}
		if got := c.Stats().Records; got < uint64(n) {
			b.Fatalf("%d records acknowledged, want %d", got, n)
		}

		rate := float64(n) / took.Seconds()
		perRecord := float64(cpu.Microseconds()) / float64(n)
		b.ReportMetric(rate, "records/s")
		b.ReportMetric(perRecord, "cpu-us/record")
		fmt.Fprintf(os.Stderr, "drain of %d records to mosquitto: %.0f records/s (%s), %.2f us of CPU per record (%s); %d batches, %d page faults\n",
			n, rate, took.Round(time.Millisecond), perRecord, cpu.Round(time.Millisecond), c.Stats().Batches, flt)
	}
}

// benchStore opens a store as storetest.Open does, checked and closed when
// the benchmark ends, but let go of then: testing keeps the B of the first
// -count iteration, stale cleanups included, until the last iteration
// ends, and storetest's cleanup would keep that iteration's store (5 MB
// of key caches) live through every later drain, whose heap the collector
// then lets grow by three times as much.
func benchStore(b *testing.B) *storetest.DB {
	dir := b.TempDir()
	s, err := store.Open(store.Options{Dir: dir, DefaultCountry: storetest.DefaultCountry, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	held := &s
	b.Cleanup(func() {
		s := *held
		*held = nil
		if err := s.Check(); err != nil {
			b.Errorf("store consistency check: %v", err)
		}
		if err := s.Close(); err != nil {
			b.Errorf("close store: %v", err)
		}
	})
	return &storetest.DB{Store: s, Dir: dir}
}

// agentGC sets the collector as the agent's daemon runs with it, until
// the benchmark ends: config.GCPercent and the default memory budget as
// the soft memory limit, unless GOGC or GOMEMLIMIT say otherwise (as
// tuneGC in agent/cmd/leadport-agent/profile.go does). At Go's
// defaults the drain's heap is a third smaller than the agent's (twice
// what is live, not three times), and every page it grows by faults in.
func agentGC(b *testing.B) {
	if os.Getenv("GOGC") == "" {
		old := debug.SetGCPercent(config.GCPercent)
		b.Cleanup(func() { debug.SetGCPercent(old) })
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		old := debug.SetMemoryLimit(int64(config.DefaultMemoryBudget))
		b.Cleanup(func() { debug.SetMemoryLimit(old) })
	}
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeHeap writes a heap profile as of now (after a collection, which
// is what brings the profile up to date).
func writeHeap(b testing.TB, path string) {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// faults counts the page faults of this process, minor and major: the
// drain's reads fault in the store's mapped pages, and fresh heap memory
// faults in on first touch, both on the drain's CPU.
func faults(b testing.TB) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return int64(ru.Minflt) + int64(ru.Majflt)
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
		syncClient(b, db, k, storeEraser{&handler{db: db}}, br.URL(), nil)
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

// storeEraser erases through the store itself: storetest's EraseSubject
// first scans the whole file (a test's proof that the erase can be seen),
// which is no part of the agent's erase and took most of the figure with a
// million records stored.
type storeEraser struct{ *handler }

func (h storeEraser) Execute(ctx context.Context, c *command.Command) lpsync.Outcome {
	if a := c.Erase(); c.Type == command.TypeErase && !a.All {
		res, err := h.db.Store.EraseSubject(a.Subject)
		if err != nil {
			return lpsync.Outcome{Status: lpsync.Failed, Reason: err.Error()}
		}
		b, _ := json.Marshal(res)
		return lpsync.Outcome{Status: lpsync.Done, Result: b}
	}
	return h.handler.Execute(ctx, c)
}
