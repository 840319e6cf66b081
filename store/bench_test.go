package store_test

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	bolt "go.etcd.io/bbolt"
)

var (
	eraseRecords = flag.Int("erase.records", 1_000_000, "records in the store for BenchmarkEraseSubject")
	heldRecords  = flag.Int("held.records", 1_000_000, "records BenchmarkAppendWait appends")
)

// benchUsage is a usage record of about 300 bytes as stored (public JSON,
// header and one sealed field), the size the targets are set for.
func benchUsage(i int) *store.Usage {
	u := usage(fmt.Sprintf("+1555%07d", i%benchSubjects))
	u.BlockedBy = "" // keep the size steady
	return u
}

// rawValueSize matches what one benchUsage record occupies in its outbox.
const rawValueSize = 300

var benchSubjects = 10_000_000

// benchDir is a directory for one benchmark's files: LEADPORT_BENCH_DIR
// (e.g. /dev/shm, to take the disk out and see the CPU cost alone) or the
// test's temporary directory.
func benchDir(b *testing.B) string {
	b.Helper()
	d := os.Getenv("LEADPORT_BENCH_DIR")
	if d == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(d, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func openBench(b *testing.B) *store.Store {
	b.Helper()
	s, err := store.Open(store.Options{Dir: benchDir(b), DefaultCountry: "1", MaxSize: 4 << 30, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkAppend measures durable appends of single records by 1, 8 and 64
// concurrent appenders: with one, every record pays its own commit; with
// more, group commit shares each fsync among the appenders waiting.
func BenchmarkAppend(b *testing.B) {
	for _, appenders := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			s := openBench(b)
			appendConcurrently(b, appenders, func(i int) error {
				_, err := s.Append(context.Background(), benchUsage(i))
				return err
			})
			if st, err := s.Stats(); err == nil && st.Commits > 0 {
				b.ReportMetric(float64(st.Committed)/float64(st.Commits), "records/commit")
			}
		})
	}
}

// openRawBolt opens a bare bbolt file where openBench would put the store.
func openRawBolt(b *testing.B) *bolt.DB {
	b.Helper()
	db, err := bolt.Open(filepath.Join(benchDir(b), "raw.db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// appendConcurrently runs b.N calls of write(i) spread over appenders
// goroutines, each waiting for its call to return before the next, and
// reports the records per second.
func appendConcurrently(b *testing.B, appenders int, write func(i int) error) {
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	b.ResetTimer()
	for g := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < b.N; i += appenders {
				if err := write(i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
	// The process's CPU per record: what storing costs the device beside
	// the calls (sealing, index, commit, GC), appenders and writer alike.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/record")
}

// cpuTime is the user and system time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRawBolt is the floor to compare BenchmarkAppend with: bare bbolt
// transactions of the same number of 300-byte values, with no encryption,
// no indexes and no queue in between.
func BenchmarkRawBolt(b *testing.B) {
	for _, batch := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db := openRawBolt(b)
			val := make([]byte, rawValueSize)
			start := time.Now()
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				err := db.Update(func(tx *bolt.Tx) error {
					bk, err := tx.CreateBucketIfNotExists([]byte("outbox"))
					if err != nil {
						return err
					}
					for range min(batch, b.N-done) {
						seq, _ := bk.NextSequence()
						key := []byte{byte(seq >> 56), byte(seq >> 48), byte(seq >> 40), byte(seq >> 32), byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
						if err := bk.Put(key, val); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}

// BenchmarkRawBoltGroup is bbolt's own group commit (DB.Batch) under the
// same load as BenchmarkAppend: appenders goroutines each putting one
// 300-byte value at a time and waiting for it to be durable. It is the
// closest raw counterpart of the store's group commit; BenchmarkRawBolt is
// the floor the ratio is taken against.
func BenchmarkRawBoltGroup(b *testing.B) {
	for _, appenders := range []int{8, 64} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			db := openRawBolt(b)
			db.MaxBatchSize = appenders
			if err := db.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("outbox"))
				return err
			}); err != nil {
				b.Fatal(err)
			}
			val := make([]byte, rawValueSize)
			appendConcurrently(b, appenders, func(int) error {
				return db.Batch(func(tx *bolt.Tx) error {
					bk := tx.Bucket([]byte("outbox"))
					seq, _ := bk.NextSequence()
					return bk.Put(binary.BigEndian.AppendUint64(nil, seq), val)
				})
			})
		})
	}
}

func fill(b *testing.B, s *store.Store, n, subjects int) {
	b.Helper()
	batch := make([]store.Payload, 0, 1000)
	for i := range n {
		batch = append(batch, usage(fmt.Sprintf("+1555%07d", i%subjects)))
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := s.Append(context.Background(), batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// BenchmarkEraseSubject erases one subject among -erase.records records,
// compaction of the whole file included. Run it with -benchtime=1x.
func BenchmarkEraseSubject(b *testing.B) {
	s := openBench(b)
	const subjects = 200_000
	fill(b, s, *eraseRecords, subjects)
	st, _ := s.Stats()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		res, err := s.EraseSubject(fmt.Sprintf("+1555%07d", i%subjects))
		if err != nil {
			b.Fatal(err)
		}
		if res.UsageRedacted == 0 {
			b.Fatalf("erase %d found nothing", i)
		}
	}
	b.ReportMetric(time.Since(start).Seconds()/float64(b.N), "s/erase")
	b.ReportMetric(float64(st.SizeBytes)/(1<<20), "file-MiB")
	b.ReportMetric(float64(*eraseRecords), "records")
}

// BenchmarkPendingAck drains 100,000 pending records the way sync will:
// read a page, acknowledge it, read the next.
func BenchmarkPendingAck(b *testing.B) {
	const n = 100_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := openBench(b)
		fill(b, s, n, 50_000)
		b.StartTimer()
		start := time.Now()
		drained := 0
		for {
			recs, err := s.Pending(store.TypeUsage, store.ReadOptions{Limit: 1000})
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			ids := make([]string, len(recs))
			for j, r := range recs {
				ids[j] = r.ID
			}
			if _, err := s.Ack(ids...); err != nil {
				b.Fatal(err)
			}
			drained += len(recs)
		}
		if drained != n {
			b.Fatalf("drained %d, want %d", drained, n)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
	}
}

// BenchmarkDrainRanges drains 100,000 pending records the way sync does
// since issue 16: batches of 256 KiB of JSON read straight from the
// outbox, acknowledged by sequence range, eight batches a transaction.
// Against BenchmarkPendingAck: what acknowledging by range and reading
// without Records saved (no broker: the store's share alone).
func BenchmarkDrainRanges(b *testing.B) {
	const n = 100_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := openBench(b)
		fill(b, s, n, 50_000)
		b.StartTimer()
		start := time.Now()
		var ru0, ru1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		d := s.NewDrain()
		buf := make([]byte, 0, 260<<10)
		var after uint64
		var ranges []store.Range
		drained := 0
		for {
			var rg store.Range
			var got int
			var err error
			buf, rg, got, err = d.AppendPendingJSON(buf[:0], store.TypeUsage, after, 256<<10)
			if err != nil {
				b.Fatal(err)
			}
			if got > 0 {
				ranges = append(ranges, rg)
				after = rg.Last
				drained += got
			}
			if len(ranges) == 8 || (got == 0 && len(ranges) > 0) {
				if _, err := s.AckRanges(ranges...); err != nil {
					b.Fatal(err)
				}
				ranges = ranges[:0]
			}
			if got == 0 {
				break
			}
		}
		if drained != n {
			b.Fatalf("drained %d, want %d", drained, n)
		}
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
		b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-us/record")
	}
}

// BenchmarkAppendWait fills a store with -held.records records, one
// appender in batches of 64, and reports the longest any batch waited:
// an append waits for the commit in progress, and for whatever else holds
// the writer then (the index merge, a merge step of its runs). A run of
// the SIP proxy at twice its capacity holds as many BYE answers as
// arrive meanwhile. Also reported: the rate over the last tenth.
//
//	go test ./store -run '^$' -bench AppendWait -benchtime 1x [-args -held.records=N]
func BenchmarkAppendWait(b *testing.B) {
	for range b.N {
		s := openBench(b)
		const batch = 64
		n := *heldRecords / batch
		waits := make([]time.Duration, 0, n)
		recs := make([]store.Payload, batch)
		var lastTenth time.Time
		start := time.Now()
		for i := range n {
			if i == n-n/10 {
				lastTenth = time.Now()
			}
			for j := range recs {
				recs[j] = benchUsage(i*batch + j)
			}
			t0 := time.Now()
			if _, err := s.Append(context.Background(), recs...); err != nil {
				b.Fatal(err)
			}
			waits = append(waits, time.Since(t0))
		}
		total := time.Since(start)
		slices.Sort(waits)
		b.ReportMetric(float64(waits[len(waits)-1].Microseconds())/1000, "longest-ms")
		b.ReportMetric(float64(waits[len(waits)*999/1000].Microseconds())/1000, "p99.9-ms")
		b.ReportMetric(float64(n/10*batch)/time.Since(lastTenth).Seconds(), "last-tenth-records/s")
		b.ReportMetric(total.Seconds(), "total-s")
		s.Close()
	}
}
