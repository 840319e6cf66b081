package sipproxy

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

// BenchmarkProxyCall runs whole calls (INVITE, 180, 200, ACK, BYE, 200)
// between two sipgo user agents through the proxy over UDP, several at a
// time, with the always-allow decision in the path. It reports calls/s
// and what the decision hook costs per call, so the hook's price stays
// visible as rules land. The SIPp figures against kamailio are in
// scripts/bench-proxy.sh.
func BenchmarkProxyCall(b *testing.B) {
	r := newRig(b, "udp", nil)
	const parallel = 16
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	b.ResetTimer()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				s, err := r.phone.invite(ctxT(b), line, callee, "udp", r.port("udp"))
				if err != nil {
					b.Error(err)
					return
				}
				mustAnswer(b, s)
				if err := s.Bye(ctxT(b)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	st := r.p.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	if st.Decisions > 0 {
		b.ReportMetric(float64(st.DecisionTime.Nanoseconds())/float64(b.N), "decide-ns/call")
	}
	// Drain the usage records so the rig's channel never blocks.
	for range b.N {
		select {
		case <-r.ended:
		case <-time.After(5 * time.Second):
			b.Fatal("a call was not reported")
		}
	}
}

// BenchmarkDecide is the hook's own overhead around the decision
// function: timing, the panic guard and the atomic load of the decider.
func BenchmarkDecide(b *testing.B) {
	p, err := New(Options{Listen: []Endpoint{{"udp", "127.0.0.1", 0}}, Upstream: Endpoint{"udp", "127.0.0.1", 5060}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	ev := &detect.Event{}
	b.ReportAllocs()
	for b.Loop() {
		if v := p.decide(ev); v.Block {
			b.Fatal("blocked")
		}
	}
}
