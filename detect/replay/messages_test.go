package replay

import (
	"bytes"
	"cmp"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/capture"
	"github.com/leadport/leadport-agent/detect/policy"
)

// traceMessages renders a trace as the SIP messages a capture beside the
// device would hold: each call's INVITE, its final response, the CANCEL
// of a call given up, the BYE of an answered one from the side that hung
// up. With dup, every message is there twice, as a capture taken on a
// host between two hops holds it. lag delays the 487 after a CANCEL, as
// the network does.
func traceMessages(t testing.TB, tr *Trace, dup bool, lag time.Duration) []capture.Message {
	t.Helper()
	type timed struct {
		at  time.Duration
		seq int
		m   sip.Message
	}
	var all []timed
	add := func(at time.Duration, m sip.Message) { all = append(all, timed{at, len(all), m}) }
	for i := range tr.Calls {
		c := &tr.Calls[i]
		inv := buildInvite(c, i)
		inv.AppendHeader(sip.NewHeader("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK"+strconv.Itoa(i)))
		add(c.Start, inv)
		end := c.Start + c.Ring
		if c.Status == 487 {
			cancel := sip.NewRequest(sip.CANCEL, inv.Recipient)
			for _, h := range []string{"Via", "From", "To", "Call-ID"} {
				cancel.AppendHeader(sip.HeaderClone(inv.GetHeader(h)))
			}
			cancel.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.CANCEL})
			add(end, cancel)
		}
		res := sip.NewResponseFromRequest(inv, c.Status, "", nil)
		res.To().Params.Add("tag", "t"+strconv.Itoa(i))
		if c.Status >= 300 && c.Status < 400 {
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "+15550009999", Host: "pbx.example"}})
		}
		if c.Status == 487 {
			add(end+lag, res)
		} else {
			add(end, res)
		}
		if c.Status >= 200 && c.Status < 300 {
			bye := sip.NewRequest(sip.BYE, inv.Recipient)
			from, to := inv.From().Address, inv.To().Address
			fromTag, toTag := "f"+strconv.Itoa(i), "t"+strconv.Itoa(i)
			if c.Bye == ByeCallee {
				from, to, fromTag, toTag = to, from, toTag, fromTag
			}
			fh := &sip.FromHeader{Address: from, Params: sip.NewParams()}
			fh.Params.Add("tag", fromTag)
			th := &sip.ToHeader{Address: to, Params: sip.NewParams()}
			th.Params.Add("tag", toTag)
			bye.AppendHeader(fh)
			bye.AppendHeader(th)
			bye.AppendHeader(sip.HeaderClone(inv.CallID()))
			bye.AppendHeader(&sip.CSeqHeader{SeqNo: 2, MethodName: sip.BYE})
			add(end+c.Talk, bye)
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].at < all[j].at })
	src, dst := netip.MustParseAddrPort(LocalSource), netip.MustParseAddrPort(UpstreamSource)
	var out []capture.Message
	for _, x := range all {
		m := capture.Message{At: Epoch.Add(x.at), Src: src, Dst: dst, Transport: capture.UDP, Data: []byte(x.m.String())}
		out = append(out, m)
		if dup {
			m.Src, m.Dst = dst, netip.MustParseAddrPort("203.0.113.9:5060")
			out = append(out, m)
		}
	}
	return out
}

// TestMessagesMatchTraces: a trace replayed as SIP messages, as a capture
// holds them (each message twice, as seen at two hops), gets the same
// blocks and trips from the rules as the trace replayed directly: the
// two paths drive the same tracker and engine the same way.
func TestMessagesMatchTraces(t *testing.T) {
	pol := policy.Default()
	for mi, m := range Models() {
		if m.Class != Human && m.Class != Machine {
			continue
		}
		for seed := uint64(1); seed <= 3; seed++ {
			tr := m.Generate(rand.New(rand.NewPCG(seed, uint64(mi))), "+15551230001")
			for i := range tr.Calls {
				// Early responses are a provisional the capture would
				// show; the comparison leaves them out of both.
				tr.Calls[i].Early, tr.Calls[i].EarlyDiversion = 0, false
			}
			want, err := AnalyzeTrace(&tr, pol, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := AnalyzeMessages(traceMessages(t, &tr, true, 0), pol, CaptureOptions{Lines: tr.Lines, Start: Epoch})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Calls) != len(tr.Calls) || got.Skipped != 0 {
				t.Fatalf("%s seed %d: %d calls (skipped %d), want %d", m.Name, seed, len(got.Calls), got.Skipped, len(tr.Calls))
			}
			if i := firstDiff(got.Result.Blocks, want.Result.Blocks); i >= 0 {
				t.Errorf("%s seed %d: %d and %d blocks, first difference at %d:\n from messages %v\n from the trace %v", m.Name, seed,
					len(got.Result.Blocks), len(want.Result.Blocks), i, at(got.Result.Blocks, i), at(want.Result.Blocks, i))
			}
			if i := firstDiff(got.Result.Trips, want.Result.Trips); i >= 0 {
				t.Errorf("%s seed %d: %d and %d trips, first difference at %d:\n from messages %+v\n from the trace %+v", m.Name, seed,
					len(got.Result.Trips), len(want.Result.Trips), i, at(got.Result.Trips, i), at(want.Result.Trips, i))
			}
			if i := firstDiff(got.TripCall, want.TripCall); i >= 0 {
				t.Errorf("%s seed %d: trip %d concerns call %v from messages, %v from the trace", m.Name, seed, i, at(got.TripCall, i), at(want.TripCall, i))
			}
			if m.Class == Machine && len(want.Result.Blocks) == 0 {
				t.Errorf("%s seed %d: the trace was not blocked, so the comparison shows nothing", m.Name, seed)
			}
			if !reflect.DeepEqual(got.LineReports(), want.LineReports()) {
				t.Errorf("%s seed %d: line reports\n from messages %+v\n from the trace %+v", m.Name, seed, got.LineReports(), want.LineReports())
			}
		}
	}
}

// firstDiff is the first index where a and b differ, -1 when equal.
func firstDiff[T any](a, b []T) int {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || !reflect.DeepEqual(a[i], b[i]) {
			return i
		}
	}
	return -1
}

func at[T any](s []T, i int) any {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// TestMessagesCallTable: what a capture's calls look like as a trace
// describes them.
func TestMessagesCallTable(t *testing.T) {
	tr := Trace{Lines: []string{"+15551230001"}, Calls: []Call{
		{Start: 0, Direction: detect.Outbound, Line: "+15551230001", Remote: "+13125550101", Ring: 8 * time.Second, Status: 200, Talk: 95 * time.Second, Bye: ByeCallee},
		{Start: 200 * time.Second, Direction: detect.Outbound, Line: "+15551230001", Remote: "+13125550102", Ring: 21 * time.Second, Status: 487},
		{Start: 400 * time.Second, Direction: detect.Inbound, Line: "+15551230001", Remote: "+13125550103", Ring: 3 * time.Second, Status: 302},
		{Start: 500 * time.Second, Direction: detect.Outbound, Line: "+15551230001", Remote: "+13125550104", Ring: 2 * time.Second, Status: 200, Talk: 4 * time.Second, Bye: ByeCaller,
			PAI: "+13125559999"},
	}}
	// The 487 comes 80 ms after the CANCEL: the ring time runs to the
	// CANCEL, as a trace file's ring_s does.
	a, err := AnalyzeMessages(traceMessages(t, &tr, false, 80*time.Millisecond), policy.Default(), CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !a.InferredLines || !reflect.DeepEqual(a.Lines, tr.Lines) {
		t.Errorf("lines %v inferred %v; want %v inferred from the From of the outbound INVITEs", a.Lines, a.InferredLines, tr.Lines)
	}
	want := tr.Calls
	// The redirect is blocked with the agent's own 403; the call with
	// another P-Asserted-Identity is refused at its INVITE (caller-ID).
	want[2].Status = 403
	want[3].Status, want[3].Ring, want[3].Talk, want[3].Bye = 403, 0, 0, ""
	for i := range a.Calls {
		a.Calls[i].Source = ""
	}
	if !reflect.DeepEqual(a.Calls, want) {
		t.Errorf("calls\n got %+v\nwant %+v", a.Calls, want)
	}
	var rulesHit []string
	for _, b := range a.Result.Blocks {
		rulesHit = append(rulesHit, b.Kind+" "+b.Rule)
	}
	if !reflect.DeepEqual(rulesHit, []string{"response forwarding.redirect", "invite callerid.mismatch"}) {
		t.Errorf("blocks %v", rulesHit)
	}
	lr := a.LineReports()
	if len(lr) != 1 || lr[0].Attempts != 3 || lr[0].FirstBlock != 3 || lr[0].FirstSuspect != 0 {
		t.Errorf("line report %+v: want 3 attempts, the first block at the third, no suspect", lr)
	}
}

// TestMessagesCaptures replays the public captures: each analyzes without
// error, with as many calls as tshark shows distinct INVITE Call-IDs
// (detect/capture's TestCaptureFiles checks the reading).
func TestMessagesCaptures(t *testing.T) {
	dir := capturesDir(t)
	cases := []struct {
		file  string
		calls int
	}{
		{"heplify-erspan_sip_ipv4_udp.pcapng", 3},
		{"heplify-ipv6_udp_fragmented.pcap", 0},
		{"heplify-rtp_rtcp_sip_ipv4_udp.pcap", 2},
		{"heplify-sip_ipv4_tcp.pcap", 1},
		{"heplify-sip_ipv4_tcp_fragmented.pcap", 37},
		{"heplify-sip_ipv4_tcp_retrans.pcap", 0},
		{"heplify-sip_ipv6_udp.pcap", 1},
		{"heplify-sip_sctp.pcap", 1},
		{"heplify-sip_tcp_websocket.pcap", 2},
		{"sngrep-aaa.pcap", 4},
		{"sngrep-ipip.pcap", 1},
		{"sngrep-ipv6frag.pcap", 1},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join(dir, c.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			msgs, _, err := capture.Read(f, capture.Options{})
			if err != nil {
				t.Fatal(err)
			}
			a, err := AnalyzeMessages(msgs, policy.Default(), CaptureOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Calls) != c.calls || a.Skipped != 0 {
				t.Errorf("%d calls (%d messages skipped), want %d", len(a.Calls), a.Skipped, c.calls)
			}
		})
	}
}

func TestMessagesBracketIPv6(t *testing.T) {
	cases := []struct{ in, want string }{
		{"INVITE sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060 SIP/2.0\r\n", "INVITE sip:4321@[fec0:0:0:0:216:d3ff:fe0d:22c]:5060 SIP/2.0\r\n"},
		{"Via: SIP/2.0/UDP fe80:0:0:0:21a:a0ff:fe07:32e0:5060;branch=z9\r\nFrom: <sip:9876@fe80:0:0:0:21a:a0ff:fe07:32e0>;tag=a\r\n",
			"Via: SIP/2.0/UDP [fe80:0:0:0:21a:a0ff:fe07:32e0]:5060;branch=z9\r\nFrom: <sip:9876@[fe80:0:0:0:21a:a0ff:fe07:32e0]>;tag=a\r\n"},
		// Compressed forms are ambiguous ("fe80::1:5060" is an address):
		// the whole is taken as the host.
		{"Via: SIP/2.0/UDP fe80::1:5060;branch=z9\r\n", "Via: SIP/2.0/UDP [fe80::1:5060];branch=z9\r\n"},
		{"To: <sip:[2001:db8::1]:5060>\r\n", ""},
		{"To: <sip:+15551230001@192.0.2.1:5060>\r\n", ""},
	}
	for _, c := range cases {
		got, ok := bracketIPv6([]byte(c.in))
		if c.want == "" {
			if ok {
				t.Errorf("%q: changed to %q, want it left alone", c.in, got)
			}
			continue
		}
		if !ok || string(got) != c.want {
			t.Errorf("%q:\n got %q (%v)\nwant %q", c.in, got, ok, c.want)
		}
	}
}

// FuzzMessages replays arbitrary messages, split at "\x00", from two
// addresses in turn: bad input is skipped or replayed, never a panic.
func FuzzMessages(f *testing.F) {
	tr := Trace{Lines: []string{"+15551230001"}, Calls: []Call{
		{Start: 0, Direction: detect.Outbound, Line: "+15551230001", Remote: "+13125550101", Ring: time.Second, Status: 200, Talk: time.Second, Bye: ByeCallee},
		{Start: 10 * time.Second, Direction: detect.Inbound, Line: "+15551230001", Remote: "+13125550102", Ring: time.Second, Status: 302},
		{Start: 20 * time.Second, Direction: detect.Outbound, Line: "+15551230001", Remote: "+13125550103", Ring: time.Second, Status: 487},
	}}
	var all [][]byte
	for _, m := range traceMessages(f, &tr, false, 0) {
		all = append(all, m.Data)
		f.Add(m.Data)
		f.Add(m.Data[:len(m.Data)/2])
	}
	f.Add(bytes.Join(all, []byte{0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var msgs []capture.Message
		for i, part := range bytes.Split(data, []byte{0}) {
			src, dst := netip.MustParseAddrPort(LocalSource), netip.MustParseAddrPort(UpstreamSource)
			if i%2 == 1 {
				src, dst = dst, src
			}
			msgs = append(msgs, capture.Message{At: Epoch.Add(time.Duration(i) * time.Second), Src: src, Dst: dst, Data: part})
		}
		a, err := AnalyzeMessages(msgs, policy.Default(), CaptureOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.TripCall) != len(a.Result.Trips) || a.Skipped > len(msgs) {
			t.Fatalf("%d trips, %d of them placed; %d skipped of %d", len(a.Result.Trips), len(a.TripCall), a.Skipped, len(msgs))
		}
		_ = a.LineReports()
	})
}

func capturesDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "captures"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("the public captures are not here (%s): they live outside the repository, beside it", dir)
	}
	return dir
}

// TestStreamMatchesAnalyzeTrace: a trace replayed as a stream, each call
// reported when it is done and let go, gets the reports of the whole
// trace replayed at once: every model together (one line each, calls
// overlapping across lines), under the shipped policy and with every
// rule observing.
func TestStreamMatchesAnalyzeTrace(t *testing.T) {
	var tr Trace
	for mi, m := range Models() {
		line := "+1555123" + strconv.Itoa(1000+mi)
		g := m.Generate(rand.New(rand.NewPCG(7, uint64(mi))), line)
		tr.Calls = append(tr.Calls, g.Calls...)
		for _, l := range g.Lines {
			if !slices.Contains(tr.Lines, l) {
				tr.Lines = append(tr.Lines, l)
			}
		}
	}
	slices.SortStableFunc(tr.Calls, func(a, b Call) int { return cmp.Compare(a.Start, b.Start) })
	observe := policy.Default()
	observe.Pacing.Action, observe.Forwarding.Action, observe.Trunking.Action = policy.Observe, policy.Observe, policy.Observe
	for name, pol := range map[string]policy.Policy{"shipped": policy.Default(), "observing": observe} {
		want, err := AnalyzeTrace(&tr, pol, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var wantCalls, gotCalls []CallReport
		_ = want.EachCall(func(r *CallReport) error {
			wantCalls = append(wantCalls, *r)
			return nil
		})
		i := 0
		next := func() (Call, error) {
			if i == len(tr.Calls) {
				return Call{}, io.EOF
			}
			i++
			return tr.Calls[i-1], nil
		}
		sum, err := StreamTrace(next, tr.Lines, pol, Options{}, func(r *CallReport) error {
			c := *r
			call := *r.Call // the stream lets go of it after
			c.Call = &call
			gotCalls = append(gotCalls, c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		blocked, reported := 0, 0
		for _, c := range wantCalls {
			if c.Rule != "" {
				blocked++
			}
			reported += len(c.Observed) + len(c.Suspect)
		}
		if blocked == 0 && name == "shipped" || reported == 0 {
			t.Errorf("%s: %d calls blocked, %d reports: the comparison shows little", name, blocked, reported)
		}
		if i := firstDiff(gotCalls, wantCalls); i >= 0 {
			t.Errorf("%s: %d and %d calls, first difference at %d:\n stream %+v\n  whole %+v", name, len(gotCalls), len(wantCalls), i, at(gotCalls, i), at(wantCalls, i))
		}
		if !reflect.DeepEqual(sum.Reports, want.LineReports()) || sum.Attempts != want.Result.Attempts || sum.Calls != len(tr.Calls) {
			t.Errorf("%s: stream %d calls, %d attempts, reports %+v\nwhole %d attempts, reports %+v", name, sum.Calls, sum.Attempts, sum.Reports, want.Result.Attempts, want.LineReports())
		}
	}
}
