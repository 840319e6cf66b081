package sipproxy

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/leadport/leadport-agent/internal/testport"
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

// TestPing: a user agent of Ping's own asks the edge over UDP and TCP, under
// the name it is given, with the transport in the Request-URI when it is
// not UDP; a silent port is an error within the deadline.
func TestPing(t *testing.T) {
	edge := newPeerAt(t, "edge", callee, "127.0.0.1")
	for _, tp := range []string{"udp", "tcp"} {
		t.Run(tp, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, rtt, err := Ping(ctx, Endpoint{tp, "127.0.0.1", edge.port}, "127.0.0.1", "leadport-test")
			if err != nil || res.StatusCode != 200 || rtt <= 0 {
				t.Fatalf("Ping = %v, %v, %v; want 200", res, rtt, err)
			}
			req := edge.wantRequest(sip.OPTIONS)
			if from := req.From(); from == nil || from.Address.User != "leadport-test" {
				t.Errorf("From = %v, want the user agent's name", from)
			}
			if v, _ := req.Recipient.UriParams.Get("transport"); (tp == "udp" && v != "") || (tp != "udp" && v != tp) {
				t.Errorf("Request-URI %s for %s", req.Recipient.String(), tp)
			}
		})
	}
	t.Run("silent", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		if res, _, err := Ping(ctx, Endpoint{"udp", "127.0.0.1", freeUDPPort(t)}, "127.0.0.1", "leadport-test"); err == nil {
			t.Fatalf("Ping to a silent port = %v, want an error", res)
		}
	})
}

// freeUDPPort is a loopback UDP port nothing listens on.
func freeUDPPort(t *testing.T) int { return testport.Free(t) }
