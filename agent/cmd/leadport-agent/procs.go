package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

// procs runs the Go scheduler on one processor while the agent uses
// little CPU, and on all of them once it needs more.
//
// A PBX's usual load is tens of calls a second. At such rates every SIP
// message wakes an idle processor, whose thread spins looking for work and
// sleeps again, and the runtime's monitor thread polls behind each system
// call: on 2 cores at 100 calls/s that was 54 context switches and about
// 2 ms of CPU per call, a third of it scheduling (perf). One processor does
// the same work with a quarter fewer switches and a fifth less CPU. Under
// load all of them are needed, so run follows the CPU the process used in
// the last second (one processor below lowUse of a core, all of them
// above highUse, checked every second), and the proxy's admission control
// calls wake as soon as work waits for a CPU, so a burst of calls on a
// quiet agent gets every processor within about 10 ms instead of being
// refused. GOMAXPROCS in the environment, a single core, or no CPU time to
// read (Windows) leave the scheduler alone.
type procs struct {
	all int
	cur atomic.Int32
	on  bool
}

func newProcs() *procs {
	p := &procs{all: runtime.GOMAXPROCS(0)}
	p.cur.Store(int32(p.all))
	p.on = os.Getenv("GOMAXPROCS") == "" && p.all >= 2 && cpuTime() >= 0
	return p
}

const (
	lowUse  = 0.35 // of one core: drop to one processor
	highUse = 0.6  // of one core (one processor nearly busy): all of them
)

// wake gives the scheduler all its processors back; it is cheap when it
// has them and safe from any goroutine.
func (p *procs) wake() {
	if p.on && p.cur.CompareAndSwap(1, int32(p.all)) {
		runtime.GOMAXPROCS(p.all)
	}
}

// run adapts the processors to the CPU used until ctx ends.
func (p *procs) run(ctx context.Context, log *slog.Logger) {
	if !p.on {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := cpuTime(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used := cpuTime()
			use := float64(used-last) / float64(now.Sub(lastAt))
			last, lastAt = used, now
			switch cur := p.cur.Load(); {
			case cur > 1 && use < lowUse:
				if p.cur.CompareAndSwap(cur, 1) {
					runtime.GOMAXPROCS(1)
					log.Debug("scheduler processors", "gomaxprocs", 1, "cpu_use", use)
				}
			case cur == 1 && use > highUse:
				p.wake()
				log.Debug("scheduler processors", "gomaxprocs", p.all, "cpu_use", use)
			}
		}
	}
}
