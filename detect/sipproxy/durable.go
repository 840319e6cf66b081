package sipproxy

import "time"

// awaitRecord holds the answer to a BYE until the call's usage record is
// durable (Options.Recorded), at most DurableWait: the caller learns the
// call ended only once a crash can no longer lose it. Group commit keeps
// the wait near one fsync.
func (p *Proxy) awaitRecord(callID string) {
	if p.opts.Recorded == nil {
		return
	}
	ch := p.opts.Recorded(callID)
	if ch == nil {
		return
	}
	// Each answer held keeps its BYE's transactions and goroutine: a store
	// that stalls under load shows here first (docs/sip.md, "Overload").
	raise(&p.c.durableTop, p.c.durableIn.Add(1))
	defer p.c.durableIn.Add(-1)
	start := time.Now()
	t := time.NewTimer(p.opts.DurableWait)
	defer t.Stop()
	select {
	case <-ch:
		p.c.durableN.Add(1)
		p.c.durableNs.Add(uint64(time.Since(start)))
	case <-t.C:
		p.c.durableTO.Add(1)
		p.log.Warn("BYE answered before the call's usage record was stored", "call_id", callID, "waited", p.opts.DurableWait)
	}
}
