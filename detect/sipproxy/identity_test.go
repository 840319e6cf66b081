package sipproxy

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
)

// stampSigner puts a recognisable Identity on what it signs and records
// what it was asked; the real signer (agent, detect/passport) is tested
// against kamailio end to end.
type stampSigner struct {
	mu       sync.Mutex
	signed   []string // Call-IDs
	verdicts []detect.Verdict
	dates    []string
}

func (s *stampSigner) SignCall(req *sip.Request, line string, v detect.Verdict) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signed = append(s.signed, req.CallID().Value())
	s.verdicts = append(s.verdicts, v)
	req.AppendHeader(sip.NewHeader("Identity", "agent."+line+".sig;info=<urn:test>;alg=ES256"))
	return nil
}

func (s *stampSigner) UpstreamDate(date string, _ time.Time) {
	s.mu.Lock()
	s.dates = append(s.dates, date)
	s.mu.Unlock()
}

func identities(req *sip.Request) []string {
	var out []string
	for _, h := range req.Headers() {
		if n := strings.ToLower(h.Name()); n == "identity" || n == "y" {
			out = append(out, h.Value())
		}
	}
	return out
}

// TestProxySignsWhatItLetsOut: an outbound INVITE on a line reaches the
// upstream with the signer's Identity alone, whatever Identity headers the
// PBX put on it (long or compact form); a blocked INVITE is never signed;
// the Date of the upstream's answers reaches the signer.
func TestProxySignsWhatItLetsOut(t *testing.T) {
	signer := &stampSigner{}
	r := newRig(t, "udp", func(o *Options, _ *rig) {
		o.Signer = signer
		o.Decider = detect.DeciderFunc(func(ev *detect.Event) detect.Verdict {
			switch ev.Request.Recipient.User {
			case "+15550000001":
				return detect.Verdict{Block: true, Status: 403, Rule: "test.rule"}
			case "+15550000003":
				return detect.Verdict{Observed: []string{"test.observed"}}
			}
			return detect.Allow
		})
	})
	edgeDate := time.Now().UTC().Format(http.TimeFormat)
	r.edge.setAnswer(func(s *sipgo.DialogServerSession, _ sip.ServerTransaction) {
		s.Respond(200, "OK", []byte(testSDP), sip.NewHeader("Content-Type", "application/sdp"), sip.NewHeader("Date", edgeDate))
	})

	forged := []sip.Header{
		sip.NewHeader("Identity", "forged.by.pbx;info=<urn:pbx>;alg=ES256"),
		sip.NewHeader("y", "compact.forged;info=<urn:pbx>"),
		sip.NewHeader("IDENTITY", "shouting.forged;info=<urn:pbx>"),
	}
	s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"), forged...)
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	got := r.edge.wantRequest(sip.INVITE)
	if ids := identities(got); len(ids) != 1 || ids[0] != "agent."+line+".sig;info=<urn:test>;alg=ES256" {
		t.Errorf("the upstream got Identity %q, want the signer's alone", ids)
	}
	mustHangUp(t, s)
	if bye := r.edge.wantRequest(sip.BYE); len(identities(bye)) != 0 {
		t.Errorf("BYE carries Identity %q", identities(bye))
	}
	r.wantCall()

	// Blocked: answered by the proxy, never signed.
	s, err = r.phone.invite(ctxT(t), line, "+15550000001", "udp", r.port("udp"), forged...)
	if err != nil {
		t.Fatal(err)
	}
	var de *sipgo.ErrDialogResponse
	if err := s.WaitAnswer(ctxT(t), sipgo.AnswerOptions{}); !errors.As(err, &de) || de.Res.StatusCode != 403 {
		t.Fatalf("blocked call: %v", err)
	}
	r.wantCall()

	// Observed: signed, and the signer hears which rules observed.
	s, err = r.phone.invite(ctxT(t), line, "+15550000003", "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	r.edge.wantRequest(sip.INVITE)
	mustHangUp(t, s)
	r.wantCall()

	// A transfer's new dialog (INVITE with Replaces) is an initial INVITE:
	// signed like any other.
	s, err = r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"), sip.NewHeader("Replaces", "xfer-1@pbx;to-tag=a;from-tag=b"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	if inv := r.edge.wantRequest(sip.INVITE); inv.GetHeader("Replaces") == nil || len(identities(inv)) != 1 {
		ids := identities(inv)
		t.Errorf("transfer INVITE reached the upstream with Identity %q (Replaces %v)", ids, inv.GetHeader("Replaces"))
	}
	mustHangUp(t, s)
	r.wantCall()

	signer.mu.Lock()
	defer signer.mu.Unlock()
	if len(signer.signed) != 3 {
		t.Fatalf("signed %d calls, want 3 (the blocked one never)", len(signer.signed))
	}
	if v := signer.verdicts[1]; len(v.Observed) != 1 || v.Observed[0] != "test.observed" {
		t.Errorf("observed call's verdict %+v", v)
	}
	if len(signer.dates) == 0 || signer.dates[0] != edgeDate {
		t.Errorf("upstream dates %q, want %q first", signer.dates, edgeDate)
	}
	if st := r.p.Stats(); st.Signed != 3 || st.IdentityStrips != 3 {
		t.Errorf("stats: %d signed, %d Identity headers stripped; want 3 and 3", st.Signed, st.IdentityStrips)
	}
}

// TestUpstreamUDPOnly: an upstream that takes no TCP gets large requests
// (every signed INVITE is one) over UDP, and after the first refusal the
// proxy stops trying TCP: a firewall that drops SYNs must not cost every
// call a connect timeout.
func TestUpstreamUDPOnly(t *testing.T) {
	r := newRig(t, "udp", nil)
	r.edge.tcp.Close()
	pad := sip.NewHeader("X-Padding", strings.Repeat("p", 1400))
	for i := range 2 {
		s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"), pad)
		if err != nil {
			t.Fatal(err)
		}
		mustAnswer(t, s)
		if inv := r.edge.wantRequest(sip.INVITE); inv.Transport() != "UDP" {
			t.Errorf("call %d: the INVITE came over %s, want UDP", i, inv.Transport())
		}
		mustHangUp(t, s)
		r.wantCall()
	}
	if n := r.p.Stats().TCPSwitches; n != 1 {
		t.Errorf("TCP tried %d times, want once", n)
	}
}
