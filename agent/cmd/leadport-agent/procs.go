package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"time"
)

// adaptProcs runs the Go scheduler on one processor while the agent uses
// little CPU, and on all of them once it needs more, until ctx ends.
//
// A PBX's usual load is tens of calls a second. At such rates every SIP
// message wakes an idle processor, whose thread spins looking for work and
// sleeps again, and the runtime's monitor thread polls behind each system
// call: on 2 cores at 100 calls/s that was 54 context switches and about
// 2 ms of CPU per call, a third of it scheduling (perf). One processor does
// the same work with a third fewer switches and CPU. Under load all of
// them are needed (the proxy's top call rate roughly halves on one), so
// the setting follows the CPU the process used in the last second: one
// below lowUse of a core, all of them above highUse. The check is a
// getrusage a second (four while on one processor); GOMAXPROCS in the
// environment turns it off.
func adaptProcs(ctx context.Context, log *slog.Logger) {
	all := runtime.GOMAXPROCS(0)
	if os.Getenv("GOMAXPROCS") != "" || all < 2 || cpuTime() < 0 {
		return
	}
	const (
		lowUse  = 0.35 // of one core: drop to one processor
		highUse = 0.6  // of one core (one processor is nearly busy): all of them
		// On one processor the use is checked four times as often, so a
		// burst of calls on a quiet agent waits at most a quarter second
		// for the other processors (admission control and the socket
		// buffer hold it meanwhile).
		slow, fast = time.Second, 250 * time.Millisecond
	)
	t := time.NewTicker(slow)
	defer t.Stop()
	last, lastAt := cpuTime(), time.Now()
	cur := all
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used := cpuTime()
			use := float64(used-last) / float64(now.Sub(lastAt))
			last, lastAt = used, now
			switch {
			case cur > 1 && use < lowUse:
				cur = 1
			case cur == 1 && use > highUse:
				cur = all
			default:
				continue
			}
			runtime.GOMAXPROCS(cur)
			if cur == 1 {
				t.Reset(fast)
			} else {
				t.Reset(slow)
			}
			log.Debug("scheduler processors", "gomaxprocs", cur, "cpu_use", use)
		}
	}
}
