//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/store"
)

const restartSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"

// sipPeer is a sipgo user agent on a loopback UDP port that answers
// INVITEs and keeps its dialogs.
type sipPeer struct {
	ua   *sipgo.UserAgent
	dcc  *sipgo.DialogClientCache
	port int
}

func newSIPPeer(t *testing.T, user string) *sipPeer {
	t.Helper()
	port := freePort(t)
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(user), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: "127.0.0.1", Port: port}}
	p := &sipPeer{ua: ua, dcc: sipgo.NewDialogClientCache(cli, contact), port: port}
	dsc := sipgo.NewDialogServerCache(cli, contact)
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		s, err := dsc.ReadInvite(req, tx)
		if err != nil {
			tx.Respond(sip.NewResponseFromRequest(req, 500, "", nil))
			return
		}
		s.Respond(200, "OK", []byte(restartSDP), sip.NewHeader("Content-Type", "application/sdp"))
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { dsc.ReadAck(req, tx) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if dsc.ReadBye(req, tx) != nil && p.dcc.ReadBye(req, tx) != nil {
			tx.Respond(sip.NewResponseFromRequest(req, 481, "", nil))
		}
	})
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ListenAndServe(ctx, "udp", fmt.Sprintf("127.0.0.1:%d", port))
	t.Cleanup(func() { cancel(); ua.Close() })
	return p
}

// TestCallSpansRestart: a call answered before the agent goes down (a
// clean stop, or SIGKILL once the call is in the checkpoint) and comes back
// within seconds ends after it with a BYE through the new process, and gets
// one usage record with its whole duration.
func TestCallSpansRestart(t *testing.T) {
	bin := buildAgent(t)
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{
		{"clean stop", syscall.SIGTERM},
		{"crash", syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) { testCallSpansRestart(t, bin, tc.sig) })
	}
}

func testCallSpansRestart(t *testing.T, bin string, sig syscall.Signal) {
	dir := t.TempDir()
	edge := newSIPPeer(t, "edge")
	phone := newSIPPeer(t, "+15551230001")
	agentPort := freePort(t)
	cfg := filepath.Join(dir, "agent.yaml")
	data := filepath.Join(dir, "data")
	writeFile(t, cfg, fmt.Sprintf(`data_dir: %s
lines: ["+15551230001"]
sip:
  listen: ["udp://127.0.0.1:%d"]
  upstream: "udp://127.0.0.1:%d"
api: {socket: %s}
log: {level: debug}
`, data, agentPort, edge.port, filepath.Join(dir, "api.sock")))
	first := startLogged(t, dir, "agent-1", bin, "run", "--config", cfg)
	waitListening(t, first, "agent", "udp", agentPort)

	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "+13125550199", Host: "edge.invalid"})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+15551230001", Host: "127.0.0.1"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "+13125550199", Host: "edge.invalid"}})
	req.AppendHeader(sip.NewHeader("Route", fmt.Sprintf("<sip:127.0.0.1:%d;lr>", agentPort)))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(restartSDP))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	call, err := phone.dcc.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := call.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("answer: %v", err)
	}
	if err := call.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	answered := time.Now()

	if sig == syscall.SIGKILL {
		waitLogged(t, first, "calls in progress checkpointed", "calls=1")
	}
	first.stop(t, sig, 15*time.Second)
	second := startLogged(t, dir, "agent-2", bin, "run", "--config", cfg)
	waitListening(t, second, "agent", "udp", agentPort)
	if err := call.Bye(ctx); err != nil {
		t.Fatalf("BYE through the restarted agent: %v", err)
	}
	hungUp := time.Now()
	second.stop(t, syscall.SIGTERM, 15*time.Second)

	st, err := store.Open(store.Options{Dir: data, DefaultCountry: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.Pending(store.TypeUsage, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d usage records, want 1 (the call across the restart)", len(recs))
	}
	p, err := recs[0].Decode()
	if err != nil {
		t.Fatal(err)
	}
	u := p.(*store.Usage)
	want := hungUp.Sub(answered).Seconds()
	if u.Disposition != "answered" || u.DurationS < want-1 || u.DurationS > want+1 {
		t.Errorf("usage %+v; want answered, about %.1f s", u, want)
	}
	if u.CallID != call.InviteRequest.CallID().Value() {
		t.Errorf("usage call_id %q, want the call's %q", u.CallID, call.InviteRequest.CallID().Value())
	}
	if cp, err := st.CallsInProgress(); err != nil || len(cp.Calls) != 0 {
		t.Errorf("calls in progress still kept after the call was metered: %v, %v", cp.Calls, err)
	}
}

// waitLogged waits until a line of p's log holds every one of parts.
func waitLogged(t *testing.T, p *proc, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			found := true
			for _, part := range parts {
				found = found && strings.Contains(line, part)
			}
			if found {
				return
			}
		}
		if p.exited() || time.Now().After(deadline) {
			dumpFiles(t, filepath.Dir(p.log), filepath.Base(p.log))
			t.Fatalf("%s did not log %q within 20 s", p.name, parts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
