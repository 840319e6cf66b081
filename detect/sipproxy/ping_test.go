package sipproxy

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestPingUpstream: the upstream (a sipgo peer) answers the agent's
// OPTIONS, over UDP and TCP; a silent upstream is an error within the
// deadline.
func TestPingUpstream(t *testing.T) {
	for _, tp := range []string{"udp", "tcp"} {
		t.Run(tp, func(t *testing.T) {
			r := newRig(t, tp, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			status, rtt, err := r.p.PingUpstream(ctx)
			if err != nil || status < 200 || rtt <= 0 {
				t.Fatalf("PingUpstream = %d, %v, %v; want a final status", status, rtt, err)
			}
		})
	}
	t.Run("silent", func(t *testing.T) {
		r := newRig(t, "udp", func(o *Options, r *rig) { o.Upstream.Port = freeUDPPort(t) })
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		if status, _, err := r.p.PingUpstream(ctx); err == nil {
			t.Fatalf("PingUpstream to a silent port = %d, want an error", status)
		}
	})
}

// freeUDPPort is a loopback UDP port nothing listens on.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
