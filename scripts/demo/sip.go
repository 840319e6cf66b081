package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// quiet keeps the SIP library's and the broker's chatter off the console.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// demoSDP is the offer and the answer of every call: the demo carries no
// media, the agent only looks at signalling.
const demoSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=demo\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// userAgent is a real SIP user agent (sipgo) on a loopback UDP port: the
// simulated PBX on the local side of the agent, or the simulated Leadport
// edge upstream of it.
type userAgent struct {
	name string
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	cli  *sipgo.Client
	conn net.PacketConn
	port int
	dcc  *sipgo.DialogClientCache
	dsc  *sipgo.DialogServerCache

	mu      sync.Mutex
	ring    time.Duration // how long the edge lets an INVITE ring before it answers
	invites int           // INVITEs the edge received
	options int           // OPTIONS the edge answered
}

// newUserAgent starts a user agent on a free UDP port of 127.0.0.1. user
// is the user part of its Contact.
func newUserAgent(name, user string) (*userAgent, error) {
	u := &userAgent{name: name, ring: time.Second}
	var err error
	u.ua, err = sipgo.NewUA(sipgo.WithUserAgent(name), sipgo.WithUserAgentHostname("127.0.0.1"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)))
	if err != nil {
		return nil, err
	}
	u.srv, err = sipgo.NewServer(u.ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		u.ua.Close()
		return nil, err
	}
	u.cli, err = sipgo.NewClient(u.ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(quiet))
	if err != nil {
		u.ua.Close()
		return nil, err
	}
	u.conn, err = net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		u.ua.Close()
		return nil, err
	}
	u.port = u.conn.LocalAddr().(*net.UDPAddr).Port
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: "127.0.0.1", Port: u.port}}
	u.dcc = sipgo.NewDialogClientCache(u.cli, contact)
	u.dsc = sipgo.NewDialogServerCache(u.cli, contact)
	u.srv.OnInvite(u.onInvite)
	u.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { u.dsc.ReadAck(req, tx) })
	u.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := u.dsc.ReadBye(req, tx); err == nil {
			return
		}
		if err := u.dcc.ReadBye(req, tx); err != nil {
			tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		}
	})
	u.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		u.mu.Lock()
		u.options++
		u.mu.Unlock()
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go u.srv.ServeUDP(u.conn)
	return u, nil
}

func (u *userAgent) close() {
	u.conn.Close()
	u.ua.Close()
}

// setRing sets how long the edge rings before it answers.
func (u *userAgent) setRing(d time.Duration) {
	u.mu.Lock()
	u.ring = d
	u.mu.Unlock()
}

func (u *userAgent) invitesSeen() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.invites
}

// onInvite plays the callee: 180 Ringing, then after the ring time 200 OK
// with an SDP answer; the ACK and the BYE are taken by the dialog cache.
func (u *userAgent) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil {
		if _, ok := to.Params.Get("tag"); ok { // a re-INVITE: accept it as is
			res := sip.NewResponseFromRequest(req, 200, "OK", []byte(demoSDP))
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			tx.Respond(res)
			return
		}
	}
	u.mu.Lock()
	u.invites++
	ring := u.ring
	u.mu.Unlock()
	s, err := u.dsc.ReadInvite(req, tx)
	if err != nil {
		tx.Respond(sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil))
		return
	}
	s.Respond(180, "Ringing", nil)
	select {
	case <-time.After(ring):
	case <-tx.Done(): // cancelled
		return
	}
	s.Respond(200, "OK", []byte(demoSDP), sip.NewHeader("Content-Type", "application/sdp"))
	select {
	case <-tx.Done():
	case <-time.After(35 * time.Second):
	}
}

// call is what happened to one INVITE the PBX placed.
type call struct {
	From, To string
	Ringing  bool          // a 180 came back
	Status   int           // the final status of the INVITE
	Reason   string        // its reason phrase
	Warning  string        // its Warning header, if any
	Talked   time.Duration // from the ACK to the BYE's answer
	Err      error         // a failure that is not a SIP answer
}

// Answered is whether the call was answered and hung up cleanly.
func (c call) Answered() bool { return c.Status == 200 && c.Err == nil }

// dial places a call from the PBX through the agent at agentPort: an
// INVITE routed to the agent (Route, loose routing) for the edge. When it
// is answered, the PBX ACKs, keeps the call up for talk, then hangs up
// (BYE). progress, when set, is told "ringing" and "answered" as they
// happen.
func (u *userAgent) dial(ctx context.Context, agentPort int, from, to string, talk time.Duration, progress func(string), extra ...sip.Header) call {
	c := call{From: from, To: to}
	if progress == nil {
		progress = func(string) {}
	}
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: to, Host: "edge.leadport.invalid"})
	tag := sip.NewParams()
	tag.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: from, Host: "pbx.demo.invalid"}, Params: tag})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: to, Host: "edge.leadport.invalid"}})
	req.AppendHeader(sip.NewHeader("Route", fmt.Sprintf("<sip:127.0.0.1:%d;transport=udp;lr>", agentPort)))
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: from, Host: "127.0.0.1", Port: u.port}})
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	for _, h := range extra {
		req.AppendHeader(h)
	}
	req.SetBody([]byte(demoSDP))
	req.SetTransport("UDP")

	ictx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	s, err := u.dcc.WriteInvite(ictx, req)
	if err != nil {
		c.Err = fmt.Errorf("INVITE: %w", err)
		return c
	}
	defer s.Close()
	err = s.WaitAnswer(ictx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
		if res.StatusCode == 180 || res.StatusCode == 183 {
			if !c.Ringing {
				progress("ringing")
			}
			c.Ringing = true
		}
		return nil
	}})
	var refused *sipgo.ErrDialogResponse
	switch {
	case errors.As(err, &refused):
		c.Status, c.Reason = refused.Res.StatusCode, refused.Res.Reason
		if w := refused.Res.GetHeader("Warning"); w != nil {
			c.Warning = w.Value()
		}
		return c
	case err != nil:
		c.Err = fmt.Errorf("waiting for an answer: %w", err)
		return c
	}
	c.Status, c.Reason = s.InviteResponse.StatusCode, s.InviteResponse.Reason
	if err := s.Ack(ictx); err != nil {
		c.Err = fmt.Errorf("ACK: %w", err)
		return c
	}
	progress("answered")
	up := time.Now()
	select {
	case <-time.After(talk):
	case <-ctx.Done():
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer bcancel()
	if err := s.Bye(bctx); err != nil {
		c.Err = fmt.Errorf("BYE: %w", err)
	}
	c.Talked = time.Since(up)
	return c
}
