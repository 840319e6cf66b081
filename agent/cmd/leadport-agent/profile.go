package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"

	"github.com/shirou/gopsutil/v3/mem"
)

// tuneGC sets the collector for the daemon unless GOGC or GOMEMLIMIT say
// otherwise. Every SIP message becomes a few hundred short-lived objects,
// and at Go's default (GOGC=100) collection took a third of the agent's
// CPU under load. GOGC=200 halves the collections. The soft memory limit
// keeps the heap from growing past what the device can give when a call
// storm arrives (the collector then works harder instead): a quarter of
// its memory, between 128 MiB and 1 GiB. A fixed 128 MiB was too tight
// for a busy host: past about 2,800 calls/s the transactions that linger
// for retransmissions filled it, and the collector took most of the CPU
// (the proxy then lost calls); with the limit scaled the same host
// carries 6,800 calls/s. At 1,000 concurrent calls the agent holds about
// 30 MiB, far below the limit either way.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit())
	}
}

// memoryLimit is a quarter of the device's memory, within [128 MiB, 1 GiB].
func memoryLimit() int64 {
	const lo, hi = 128 << 20, 1 << 30
	m, err := mem.VirtualMemory()
	if err != nil || m.Total == 0 {
		return lo
	}
	return min(max(int64(m.Total/4), lo), hi)
}

// startProfiles writes Go profiles for a run when asked through the
// environment, for benchmarks and field diagnosis: LEADPORT_CPUPROFILE
// (CPU, for the whole run) and LEADPORT_MEMPROFILE (heap, at exit). The
// returned function finishes them.
func startProfiles(log *slog.Logger) (func(), error) {
	var stops []func()
	if path := os.Getenv("LEADPORT_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("LEADPORT_CPUPROFILE: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("LEADPORT_CPUPROFILE: %w", err)
		}
		log.Info("writing a CPU profile", "path", path)
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if path := os.Getenv("LEADPORT_MEMPROFILE"); path != "" {
		stops = append(stops, func() {
			f, err := os.Create(path)
			if err != nil {
				log.Error("heap profile not written", "err", err)
				return
			}
			defer f.Close()
			runtime.GC()
			if err := pprof.WriteHeapProfile(f); err != nil {
				log.Error("heap profile not written", "err", err)
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}, nil
}
