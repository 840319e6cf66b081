//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestDebugLogMasksNumbers runs the real binary at debug level, the most
// it ever logs, through what a device meets: an answered call, a call the
// rules refuse, messages that do not parse, an upstream that does not
// answer; then no number used anywhere in them may be in its log whole.
func TestDebugLogMasksNumbers(t *testing.T) {
	bin := buildAgent(t)
	dir := t.TempDir()
	edge := newSIPPeer(t, "edge")
	phone := newSIPPeer(t, "+15551230001")
	agentPort := freePort(t)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	config := func(name string, upstream int) string {
		p := filepath.Join(dir, name+".yaml")
		writeFile(t, p, fmt.Sprintf(`data_dir: %s
lines: ["+15551230001"]
default_country: "1"
api: {socket: %s}
sip:
  listen: ["udp://127.0.0.1:%d"]
  upstream: "udp://127.0.0.1:%d"
log: {level: debug}
`, filepath.Join(dir, "data"), filepath.Join(dir, "api.sock"), agentPort, upstream))
		return p
	}
	numbers := []string{"5551230001", "3125550199", "3125550177", "3125550188", "3125550166"}

	a := startLogged(t, dir, "agent", bin, "run", "--config", config("agent", edge.port))
	waitListening(t, a, "agent", "udp", agentPort)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	invite := func(to string, extra ...sip.Header) (*sipgo.DialogClientSession, error) {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: to, Host: "edge.invalid"})
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+15551230001", Host: "127.0.0.1"}, Params: sip.NewParams()}
		from.Params.Add("tag", sip.GenerateTagN(8))
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: to, Host: "edge.invalid"}})
		req.AppendHeader(sip.NewHeader("Route", fmt.Sprintf("<sip:127.0.0.1:%d;lr>", agentPort)))
		for _, h := range extra {
			req.AppendHeader(h)
		}
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody([]byte(restartSDP))
		return phone.dcc.WriteInvite(ctx, req)
	}

	// An answered call.
	call, err := invite("+13125550199")
	if err != nil {
		t.Fatal(err)
	}
	if err := call.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("answer: %v", err)
	}
	call.Ack(ctx)
	if err := call.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	// A call the rules refuse: forwarded from the line (Diversion).
	refused, err := invite("+13125550188", sip.NewHeader("Diversion", "<sip:+15551230001@127.0.0.1>;reason=unconditional"))
	if err != nil {
		t.Fatal(err)
	}
	if err := refused.WaitAnswer(ctx, sipgo.AnswerOptions{}); err == nil {
		t.Fatal("a forwarded call was answered; want it refused")
	}
	// Messages that do not parse, numbers in them.
	hostile := []string{
		"INVITE sip:+13125550177@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-h1\r\nFrom: <sip:+15551230001@x>;tag=1\r\n" +
			"To: <sip:+13125550177@x>\r\nCall-ID: hostile-13125550177\r\nCSeq: nope INVITE\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:+13125550177@x SIP/2.0\r\nVia: +13125550177 garbage\r\n\r\n",
		"SIP/2.0 200 +13125550177\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-h2\r\n\r\n",
	}
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", agentPort))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range hostile {
		c.Write([]byte(m))
	}
	c.Close()
	a.stop(t, syscall.SIGTERM, 15*time.Second)

	// An upstream that does not answer: the ping and a call time out.
	b := startLogged(t, dir, "agent-silent-upstream", bin, "run", "--config", config("silent", silent.LocalAddr().(*net.UDPAddr).Port))
	waitListening(t, b, "agent", "udp", agentPort)
	lost, err := invite("+13125550166")
	if err != nil {
		t.Fatal(err)
	}
	lostDone := make(chan error, 1)
	go func() { lostDone <- lost.WaitAnswer(ctx, sipgo.AnswerOptions{}) }()
	waitLogged(t, b, "upstream does not answer OPTIONS")
	// The agent gives the call up (Timer B, 8 s) and answers it: the
	// caller's wait ends before the agent stops. Stopped first, the caller
	// would cancel after the test, on a user agent already closed (sipgo
	// then dereferences a nil response).
	select {
	case err := <-lostDone:
		if err == nil {
			t.Error("the call to a silent upstream was answered")
		}
	case <-time.After(25 * time.Second):
		t.Fatal("the call to a silent upstream got no final answer from the agent within 25 s")
	}
	b.stop(t, syscall.SIGTERM, 15*time.Second)

	for _, p := range []*proc{a, b} {
		log, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		// The run logged what it met (the check can fail): each part shows.
		if p == a {
			for _, want := range []string{"rule tripped", "level=DEBUG"} {
				if !strings.Contains(string(log), want) {
					t.Errorf("%s: no %q in the log", p.name, want)
				}
			}
		}
		for _, n := range numbers {
			if strings.Contains(string(log), n) {
				t.Errorf("%s's log carries %s whole:\n%s", p.name, n, log)
			}
		}
		masked := regexp.MustCompile(`\S*\*\*\*\d{2,4}`).FindAllString(string(log), -1)
		t.Logf("%s: masked %q", p.name, masked)
		// Numbers did reach the log, masked: the run tests something.
		if p == a && !strings.Contains(string(log), "+1555***0001") {
			t.Errorf("%s: no masked number in the log; the run logged none?", p.name)
		}
	}
}
