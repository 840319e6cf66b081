package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/leadport/leadport-agent/agent/config"
)

// tuneGC sets the collector for the daemon unless GOGC or GOMEMLIMIT say
// otherwise. Every SIP message becomes a few hundred short-lived objects,
// and at Go's default (GOGC=100) collection took a third of the agent's
// CPU under load; GOGC=200 halves the collections. The soft memory limit
// is the configured memory budget (memory_budget, 48 MiB by default): the
// heap may grow to three times what is live while that fits, and the
// collector works harder instead once it does not. The proxy refuses new
// calls once live objects and stacks fill 60 % of the budget (admission
// control), so what is live stays near it even under overload. (Before
// the budget, the limit was a quarter of the device's memory up to 1 GiB,
// and twice the proxy's capacity offered took the process past 1 GB.)
func tuneGC(budget int64) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(config.GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" && budget > 0 {
		debug.SetMemoryLimit(budget)
	}
}

// startProfiles writes Go profiles for a run when asked through the
// environment, for benchmarks and field diagnosis: LEADPORT_CPUPROFILE
// (CPU, for the whole run) and LEADPORT_MEMPROFILE (heap, at exit or
// LEADPORT_MEMPROFILE_AFTER into the run). The
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
		write := func() {
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
		}
		// LEADPORT_MEMPROFILE_AFTER (a duration) takes the heap's picture
		// that long after the start, under load, instead of at the exit.
		if d, err := time.ParseDuration(os.Getenv("LEADPORT_MEMPROFILE_AFTER")); err == nil && d > 0 {
			t := time.AfterFunc(d, write)
			stops = append(stops, func() { t.Stop() })
		} else {
			stops = append(stops, write)
		}
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}, nil
}
