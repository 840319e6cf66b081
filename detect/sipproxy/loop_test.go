package sipproxy

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestNoLoops: a request the agent would send to itself is answered, not
// relayed: inside a dialog, addressed to the agent with no Route (a UA
// that lost the route set, as SIPp does for a call whose 200 it never
// took), 481; one that already passed the agent twice, 482. Before, such a
// BYE went round the agent until Max-Forwards ran out, 70 transactions
// held for seconds each, and under overload that was half a gigabyte.
func TestNoLoops(t *testing.T) {
	r := newRig(t, "udp", nil)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	agent := fmt.Sprintf("127.0.0.1:%d", r.port("udp"))
	tests := []struct {
		name, vias string
		want       string
	}{
		{"in-dialog BYE addressed to the agent", "", "SIP/2.0 481 "},
		{"passed the agent twice", fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-a\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-b\r\n", agent, agent), "SIP/2.0 482 "},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := fmt.Sprintf("BYE sip:%s@%s SIP/2.0\r\n"+
				"Via: SIP/2.0/UDP %s;branch=z9hG4bK-loop-%d;rport\r\n%s"+
				"From: <sip:%s@127.0.0.1>;tag=a\r\nTo: <sip:%s@%s>;tag=b\r\n"+
				"Call-ID: loop-%d\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
				callee, agent, conn.LocalAddr(), i, tt.vias, line, callee, agent, i)
			to, _ := net.ResolveUDPAddr("udp", agent)
			if _, err := conn.WriteTo([]byte(msg), to); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if got := string(buf[:n]); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("answer %q, want %q", strings.SplitN(got, "\r\n", 2)[0], tt.want)
			}
			if got := r.p.Stats().Requests["BYE"]; got != uint64(i+1) {
				t.Errorf("the agent handled %d BYEs, want %d: it relayed one to itself", got, i+1)
			}
		})
	}
	r.edge.mu.Lock()
	defer r.edge.mu.Unlock()
	if n := len(r.edge.seen["BYE"]); n != 0 {
		t.Errorf("the edge got %d BYEs", n)
	}
}
