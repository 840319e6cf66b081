package sipproxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/dialog"
)

// tortureWant is what RFC 4475 asks of a proxy for one message.
type tortureWant int

const (
	// wantRelay: a valid request. The upstream gets it with nothing
	// changed but the proxy's Via on top and Max-Forwards one lower, and
	// the upstream's final answer comes back.
	wantRelay tortureWant = iota
	// wantReject: the proxy answers with one of codes itself and relays
	// nothing; with dropOK, no answer at all is acceptable too.
	wantReject
	// wantEither: RFC 4475 lets an element be liberal: relayed (checked as
	// wantRelay, and the forwarded copy must not carry the error on), or
	// rejected as wantReject.
	wantEither
	// wantDrop: a response no transaction waits for: nothing comes of it
	// and the proxy counts it as dropped.
	wantDrop
)

type tortureCase struct {
	file   string // under testdata/torture, without .dat
	name   string // subtest name; default file
	rfc    string // RFC 4475 section
	want   tortureWant
	codes  []int // wantReject, wantEither: the statuses the RFC allows
	dropOK bool  // wantReject, wantEither: silence is acceptable
	// tcpDrop: over TCP, sipgo's stream parser refuses the message and
	// ends the connection, so no answer comes; RFC 4475 allows dropping
	// an invalid message. Only these cases may go unanswered over TCP.
	tcpDrop bool
	// udpOnly: the message is about datagram framing, or not framed for a
	// stream (no or several Content-Length, no end of headers).
	udpOnly bool
	// subst are old, new pairs applied to the header section; {proxy} and
	// {upstream} stand for those ports on 127.0.0.1.
	subst []string
	// startLine is the start line the relayed copy must have when it is
	// not the sent one with its elements single-spaced.
	startLine string
	check     func(t checker, o *tortureObs)
}

func (tc tortureCase) String() string {
	if tc.name != "" {
		return tc.name
	}
	return tc.file
}

// tortureObs is what became of one request.
type tortureObs struct {
	transport string
	sent      []byte      // as sent, after the rewrite
	got       []int       // the statuses that came back
	final     *tortureRes // the final response; nil: none
	relayed   []byte      // the first copy the upstream got; nil: none
	tp        *tap
	since     int // the tap's message count before sending
	err       error
}

// tortureRes is a response the sender got. A 400 for a broken request
// copies the broken headers back, so it may not parse: then parsed is nil
// and status and callID come from the raw text.
type tortureRes struct {
	status int
	callID string
	raw    []byte
	parsed *sip.Response
}

var statusLine = regexp.MustCompile(`^SIP/\d+\.\d+ (\d{3}) `)

func parseTortureRes(raw []byte) *tortureRes {
	res := &tortureRes{raw: bytes.Clone(raw)}
	if msg, err := sip.NewParser().ParseSIP(raw); err == nil {
		if p, ok := msg.(*sip.Response); ok {
			res.parsed, res.status = p, p.StatusCode
			if c := p.CallID(); c != nil {
				res.callID = c.Value()
			}
			return res
		}
		return nil
	}
	m := statusLine.FindSubmatch(raw)
	if m == nil {
		return nil
	}
	res.status, _ = strconv.Atoi(string(m[1]))
	head, _ := splitHead(raw)
	if c := callIDRe.FindSubmatch(head); c != nil {
		res.callID = string(c[1])
	}
	return res
}

func (res *tortureRes) String() string {
	if res == nil {
		return "none"
	}
	return startLine(res.raw)
}

// dump is the whole response, to show with an unexpected answer.
func (res *tortureRes) dump() string {
	if res == nil {
		return ""
	}
	return ":\n" + string(res.raw)
}

var tortureCases = []tortureCase{
	// 3.1.1 Valid messages: parsed and processed.
	{file: "valid/wsinv", rfc: "3.1.1.1", want: wantRelay,
		// The preloaded Route names the next hop: make it the upstream.
		subst: []string{"services.example.com", "127.0.0.1:{upstream}"}},
	{file: "valid/intmeth", rfc: "3.1.1.2", want: wantRelay},
	{file: "valid/esc01", rfc: "3.1.1.3", want: wantRelay},
	{file: "valid/escnull", rfc: "3.1.1.4", want: wantRelay},
	{file: "valid/esc02", rfc: "3.1.1.5", want: wantRelay}, // method RE%47IST%45R, not REGISTER
	{file: "valid/lwsdisp", rfc: "3.1.1.6", want: wantRelay},
	{file: "valid/longreq", rfc: "3.1.1.7", want: wantRelay},
	{file: "valid/dblreq", rfc: "3.1.1.8", want: wantRelay, udpOnly: true,
		// The INVITE after the REGISTER's end is noise in the datagram.
		check: func(t checker, o *tortureObs) {
			if got := o.tp.find(callIDNeedle("dblreq.0ha0isnda977644900765@192.0.2.15"), o.since); got != nil {
				t.Errorf("the trailing octets of the datagram were relayed as a request:\n%s", got)
			}
		}},
	{file: "valid/semiuri", rfc: "3.1.1.9", want: wantRelay},
	{file: "valid/transports", rfc: "3.1.1.10", want: wantRelay},
	{file: "valid/mpart01", rfc: "3.1.1.11", want: wantRelay,
		// The Route (no lr) is the sender's outbound proxy: this one.
		subst: []string{"127.0.0.1:5080", "127.0.0.1:{proxy}"}},
	{file: "valid/unreason", rfc: "3.1.1.12", want: wantDrop},
	{file: "valid/noreason", rfc: "3.1.1.13", want: wantDrop},

	// 3.1.2 Invalid messages.
	{file: "invalid/badinv01", tcpDrop: true, rfc: "3.1.2.1", want: wantReject, codes: []int{400}},
	{file: "invalid/clerr", rfc: "3.1.2.2", want: wantReject, codes: []int{400}, udpOnly: true},
	{file: "invalid/ncl", rfc: "3.1.2.3", want: wantReject, codes: []int{400}, udpOnly: true},
	{file: "invalid/scalar02", tcpDrop: true, rfc: "3.1.2.4", want: wantReject, codes: []int{400}},
	{file: "invalid/scalarlg", rfc: "3.1.2.5", want: wantDrop},
	{file: "invalid/quotbal", tcpDrop: true, rfc: "3.1.2.6", want: wantReject, codes: []int{400}},
	{file: "invalid/ltgtruri", tcpDrop: true, rfc: "3.1.2.7", want: wantReject, codes: []int{400}},
	{file: "invalid/lwsruri", tcpDrop: true, rfc: "3.1.2.8", want: wantReject, codes: []int{400}},
	{file: "invalid/lwsstart", tcpDrop: true, rfc: "3.1.2.9", want: wantEither, codes: []int{400}},
	{file: "invalid/trws", tcpDrop: true, rfc: "3.1.2.10", want: wantEither, codes: []int{400}},
	{file: "invalid/escruri", rfc: "3.1.2.11", want: wantEither, codes: []int{400},
		// Liberal: the escaped headers must not be forwarded, in the
		// Request-URI or turned into real headers.
		startLine: "INVITE sip:user@example.com SIP/2.0",
		check: func(t checker, o *tortureObs) {
			if o.relayed != nil && regexp.MustCompile(`(?im)^Route\s*:.*example\.com`).Match(o.relayed) {
				t.Errorf("the Request-URI's escaped Route became a header:\n%s", o.relayed)
			}
		}},
	{file: "invalid/baddate", rfc: "3.1.2.12", want: wantEither, codes: []int{400}},
	{file: "invalid/regbadct", rfc: "3.1.2.13", want: wantEither, codes: []int{400},
		// Liberal: the forwarded Contact must be a name-addr.
		check: func(t checker, o *tortureObs) {
			if o.relayed != nil && !regexp.MustCompile(`(?im)^(Contact|m)\s*:\s*<`).Match(o.relayed) {
				t.Errorf("the Contact was forwarded without <>:\n%s", o.relayed)
			}
		}},
	{file: "invalid/badaspec", tcpDrop: true, rfc: "3.1.2.14", want: wantEither, codes: []int{400}},
	{file: "invalid/baddn", rfc: "3.1.2.15", want: wantEither, codes: []int{400}, udpOnly: true}, // no end of headers
	{file: "invalid/badvers", rfc: "3.1.2.16", want: wantReject, codes: []int{505}},
	{file: "invalid/mismatch01", rfc: "3.1.2.17", want: wantReject, codes: []int{400}},
	{file: "invalid/mismatch02", rfc: "3.1.2.18", want: wantReject, codes: []int{501, 400}},
	{file: "invalid/bigcode", rfc: "3.1.2.19", want: wantDrop},

	// 3.2 Transaction layer semantics: reject, or fall back to RFC 2543
	// transaction matching.
	{file: "invalid/badbranch", rfc: "3.2.1", want: wantEither, codes: []int{400}},

	// 3.3 Application layer semantics, as they apply to a proxy.
	{file: "invalid/insuf", rfc: "3.3.1", want: wantReject, codes: []int{400}},
	{file: "invalid/unkscm", rfc: "3.3.2", want: wantReject, codes: []int{416}},
	{file: "invalid/novelsc", tcpDrop: true, rfc: "3.3.3", want: wantReject, codes: []int{416, 404}},
	{file: "invalid/unksm2", rfc: "3.3.4", want: wantRelay}, // a registrar rejects it, a proxy forwards it
	{file: "invalid/bext01", rfc: "3.3.5", want: wantReject, codes: []int{420},
		check: func(t checker, o *tortureObs) {
			if o.final == nil || o.final.status != 420 {
				return
			}
			u := regexp.MustCompile(`(?im)^Unsupported\s*:(.*)$`).FindSubmatch(o.final.raw)
			if u == nil || !bytes.Contains(u[1], []byte("noProxiesSupportThis")) || !bytes.Contains(u[1], []byte("norDoAnyProxiesSupportThis")) {
				t.Errorf("420 without the Proxy-Require tags in Unsupported%s", o.final.dump())
			}
		}},
	{file: "invalid/invut", rfc: "3.3.6", want: wantRelay}, // 415 is the UAS's business
	{file: "invalid/regaut01", rfc: "3.3.7", want: wantRelay,
		check: func(t checker, o *tortureObs) {
			if o.relayed != nil && !bytes.Contains(o.relayed, []byte("NoOneKnowsThisScheme opaque-data=here")) {
				t.Errorf("Authorization not forwarded unmodified:\n%s", o.relayed)
			}
		}},
	{file: "invalid/multi01", rfc: "3.3.8", want: wantReject, codes: []int{400}},
	{file: "invalid/mcl01", rfc: "3.3.9", want: wantReject, codes: []int{400}, udpOnly: true},
	{file: "invalid/bcast", rfc: "3.3.10", want: wantDrop},
	// The same response as if it answered a request this proxy sent: its
	// own Via on top, then the broadcast address. Proxies drop it.
	{file: "invalid/bcast", name: "invalid/bcast-via-ours", rfc: "3.3.10", want: wantDrop,
		subst: []string{"192.0.2.198", "127.0.0.1:{proxy}"}},
	{file: "invalid/zeromf", rfc: "3.3.11", want: wantReject, codes: []int{483}},
	{file: "invalid/cparam01", rfc: "3.3.12", want: wantRelay},
	{file: "invalid/cparam02", rfc: "3.3.13", want: wantRelay},
	{file: "invalid/regescrt", rfc: "3.3.14", want: wantRelay},
	{file: "invalid/sdp01", rfc: "3.3.15", want: wantRelay}, // 406 is the UAS's business

	// 3.4.1 RFC 2543 syntax (no branch, no Max-Forwards, no
	// Content-Length): accepted for backward compatibility.
	{file: "invalid/inv2543", rfc: "3.4.1", want: wantRelay, udpOnly: true},

	// Not from RFC 4475: no SIP version, a header line without a colon.
	{file: "invalid/test", rfc: "-", want: wantReject, codes: []int{400}, dropOK: true, udpOnly: true},
}

// knownProxyBugs are messages the proxy does not handle as RFC 4475 asks.
// Each is reported to be fixed in the proxy; its subtest still runs every
// check and skips while every finding is the bug's known symptom, fails
// when a finding is anything else (a new regression must not hide behind
// the skip), and fails once the bug is gone so that the entry is removed.
// The key is the case's name (for every transport it runs over) or
// transport/name.
var knownProxyBugs = map[string]knownProxyBug{
	"valid/wsinv": {
		why: "400 from sipgo's transaction layer (rejectMalformedRequest) before handle(): sipgo keeps the " +
			"whitespace of 'tag = 98asjd8' in the parameter name, so with a branch lacking z9hG4bK no transaction key can be made",
		symptom: regexp.MustCompile(`^valid request not relayed; answers from the proxy: \[400\]`),
	},
	"invalid/inv2543": {
		why: "400 from sipgo's transaction layer (rejectMalformedRequest) before handle(): no Via branch and " +
			"no From tag (RFC 2543) leave makeServerTxKey without a key; RFC 4475 3.4.1 wants it accepted",
		symptom: regexp.MustCompile(`^valid request not relayed; answers from the proxy: \[400\]`),
	},
	"udp/invalid/novelsc": {
		why: "400 from parseFailed/badRequest because sipgo cannot parse the soap.beep scheme; " +
			"RFC 4475 3.3.3 wants it parsed and answered 416 (or 404)",
		symptom: regexp.MustCompile(`^answered SIP/2\.0 400 [^;]*; want one of \[416 404\]`),
	},
}

// knownProxyBug is why a case fails and what its checks then find.
type knownProxyBug struct {
	why     string
	symptom *regexp.Regexp // every finding must match it
}

// TestTorture sends the RFC 4475 torture messages, as sipgo ships them
// (testdata/torture, names kept), raw to a running proxy: every request
// over UDP and, where it is framed for a stream, over TCP, from a socket
// of its own; the responses over UDP. sipgo's valid/invalid folders follow
// its parser, not the RFC, so each message's expectation below is what
// RFC 4475 asks of a proxy. Only what it takes to reach the proxy and get
// answers back is rewritten: the top Via's transport and sent-by name the
// sender's socket, a Route naming another proxy names this one or the
// upstream, and over TCP the Call-ID is prefixed. A tap between the proxy
// and the edge peer keeps the bytes of every message the proxy sends
// upstream, whatever its method. Messages the proxy mishandles are listed
// in knownProxyBugs.
func TestTorture(t *testing.T) {
	var tp *tap
	r := newRig(t, "udp", func(o *Options, r *rig) {
		tp = newTap(t, r.edge.port)
		o.Upstream = Endpoint{"udp", "127.0.0.1", tp.port}
	})
	for _, tc := range tortureCases {
		if _, err := os.Stat(tortureFile(tc.file)); err != nil {
			t.Fatal(err)
		}
	}

	// Responses one at a time, to tell from the counter which were dropped.
	t.Run("responses", func(t *testing.T) {
		for _, tc := range tortureCases {
			if tc.want != wantDrop {
				continue
			}
			t.Run(tc.String(), func(t *testing.T) {
				knownBug(t, "udp/"+tc.String(), func(c checker) { tc.runResponse(c, r) })
			})
		}
	})
	// Every request over both transports at once: the proxy takes them
	// concurrently, and the waits for answers that never come overlap.
	type job struct {
		tc        tortureCase
		transport string
		o         *tortureObs
	}
	var jobs []*job
	var wg sync.WaitGroup
	for _, transport := range []string{"udp", "tcp"} {
		for _, tc := range tortureCases {
			if tc.want == wantDrop || transport == "tcp" && tc.udpOnly {
				continue
			}
			j := &job{tc: tc, transport: transport}
			jobs = append(jobs, j)
			wg.Add(1)
			go func() {
				defer wg.Done()
				j.o = tc.observe(r, tp, transport)
			}()
		}
	}
	wg.Wait()
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			for _, j := range jobs {
				if j.transport != transport {
					continue
				}
				t.Run(j.tc.String(), func(t *testing.T) {
					knownBug(t, transport+"/"+j.tc.String(), func(c checker) { j.tc.evaluate(c, r, j.o) })
				})
			}
		})
	}

	// After all that, a normal call still goes through.
	s, err := r.phone.invite(ctxT(t), line, callee, "udp", r.port("udp"))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, s)
	mustHangUp(t, s)
	r.edge.wantRequest(sip.BYE)
	if c := r.wantCall(); c.Disposition != dialog.Answered || c.Line != line {
		t.Errorf("call after the torture messages = %+v", c)
	}
	if st := r.p.Stats(); st.Panics != 0 {
		t.Errorf("%d panics while handling the torture messages", st.Panics)
	}
}

// checker is what the checks report to: the subtest, or for a known
// proxy bug a recorder of their findings.
type checker interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
}

// findings records the errors of a known bug's checks instead of failing.
type findings struct {
	*testing.T
	errs []string
}

func (f *findings) Errorf(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

// knownBug runs a subtest's checks; for a known proxy bug it skips with
// what they found, and fails when they find nothing.
func knownBug(t *testing.T, key string, run func(c checker)) {
	t.Helper()
	_, name, _ := strings.Cut(key, "/")
	if _, ok := knownProxyBugs[key]; !ok {
		key = name
	}
	bug, known := knownProxyBugs[key]
	if !known {
		run(t)
		return
	}
	f := &findings{T: t}
	run(f)
	if len(f.errs) == 0 {
		t.Errorf("known proxy bug %q no longer shows: remove %q from knownProxyBugs", bug.why, key)
		return
	}
	for _, e := range f.errs {
		if !bug.symptom.MatchString(e) {
			t.Errorf("besides the known bug (%s), a finding that is not its symptom %q:\n%s", key, bug.symptom, strings.Join(f.errs, "\n"))
			return
		}
	}
	t.Skipf("known proxy bug (reported): %s\nfindings:\n%s", bug.why, strings.Join(f.errs, "\n"))
}

func tortureFile(name string) string {
	return filepath.Join("testdata", "torture", filepath.FromSlash(name)+".dat")
}

var (
	// viaSentBy finds a Via's sent-protocol and sent-by, through the
	// whitespace and folding RFC 4475 puts in them.
	viaSentBy = regexp.MustCompile(`(?i)(SIP\s*/\s*[0-9.]+\s*/\s*)([A-Z]+)(\s+)([^\s;,]+)`)
	callIDRe  = regexp.MustCompile(`(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)`)
	branchRe  = regexp.MustCompile(`(?i)branch\s*=\s*([^\s;,]+)`)
	clRe      = regexp.MustCompile(`(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)`)
	mfRe      = regexp.MustCompile(`(?im)^max-forwards[ \t]*:[ \t]*(\d+)`)
)

// splitHead cuts a message at the end of its header section.
func splitHead(m []byte) (head, rest []byte) {
	if i := bytes.Index(m, []byte("\r\n\r\n")); i >= 0 {
		return m[:i+2], m[i+2:]
	}
	return m, nil
}

// bodyOf is a message's body as its Content-Length frames it.
func bodyOf(m []byte) []byte {
	head, rest := splitHead(m)
	rest = bytes.TrimPrefix(rest, []byte("\r\n"))
	if c := clRe.FindSubmatch(head); c != nil {
		if n, err := strconv.Atoi(string(c[1])); err == nil && n <= len(rest) {
			return rest[:n]
		}
	}
	return rest
}

func startLine(m []byte) string {
	l, _, _ := bytes.Cut(m, []byte("\r\n"))
	return string(l)
}

// sentBys lists the sent-by of every Via in a message's headers.
func sentBys(m []byte) []string {
	head, _ := splitHead(m)
	var out []string
	for _, s := range viaSentBy.FindAllSubmatch(head, -1) {
		out = append(out, string(s[4]))
	}
	return out
}

// key finds a message's relayed copy by its Call-ID, else by its top Via
// branch; callID is "" without one.
func key(m []byte) (callID string, needle *regexp.Regexp) {
	head, _ := splitHead(m)
	if c := callIDRe.FindSubmatch(head); c != nil {
		return string(c[1]), callIDNeedle(string(c[1]))
	}
	if b := branchRe.FindSubmatch(head); b != nil {
		return "", regexp.MustCompile(`(?i)branch\s*=\s*` + regexp.QuoteMeta(string(b[1])) + `(?:[;,\s]|$)`)
	}
	return "", nil
}

func callIDNeedle(id string) *regexp.Regexp {
	return regexp.MustCompile(`(?im)^(?:call-id|i)[ \t]*:[ \t]*` + regexp.QuoteMeta(id) + `[ \t]*\r?$`)
}

// prepare reads the message and rewrites it to reach the proxy over
// transport from 127.0.0.1:local.
func (tc tortureCase) prepare(r *rig, transport string, local int) ([]byte, error) {
	raw, err := os.ReadFile(tortureFile(tc.file))
	if err != nil {
		return nil, err
	}
	head, rest := splitHead(raw)
	h := string(head)
	repl := strings.NewReplacer("{proxy}", strconv.Itoa(r.port(transport)), "{upstream}", strconv.Itoa(r.p.opts.Upstream.Port))
	for i := 0; i+1 < len(tc.subst); i += 2 {
		h = strings.ReplaceAll(h, tc.subst[i], repl.Replace(tc.subst[i+1]))
	}
	if tc.want == wantDrop {
		return append([]byte(h), rest...), nil
	}
	if m := viaSentBy.FindStringSubmatchIndex(h); m != nil {
		h = h[:m[4]] + strings.ToUpper(transport) + h[m[5]:m[8]] + fmt.Sprintf("127.0.0.1:%d", local) + h[m[9]:]
	}
	if transport == "tcp" {
		// The same message goes over UDP too: keep the two apart by their
		// Call-ID, or without one by their branch.
		if c := callIDRe.FindStringSubmatch(h); c != nil {
			h = strings.ReplaceAll(h, c[1], "tcp-"+c[1])
		} else if b := branchRe.FindStringSubmatch(h); b != nil {
			h = strings.Replace(h, b[1], b[1]+"-tcp", 1)
		}
	}
	return append([]byte(h), rest...), nil
}

// runResponse sends a response of the corpus: nothing is to come of it
// but the proxy's count of dropped responses.
func (tc tortureCase) runResponse(t checker, r *rig) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg, err := tc.prepare(r, "udp", conn.LocalAddr().(*net.UDPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	before := r.p.Stats()
	if _, err := conn.WriteTo(msg, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: r.port("udp")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for r.p.Stats().BadResponses == before.BadResponses && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	after := r.p.Stats()
	if after.BadResponses != before.BadResponses+1 {
		var relayed []string
		for code, n := range after.Responses {
			if n > before.Responses[code] {
				relayed = append(relayed, strconv.Itoa(code))
			}
		}
		t.Errorf("%s (RFC 4475 %s): not counted as dropped (bad responses %d -> %d; responses counted as relayed: %v)",
			tc, tc.rfc, before.BadResponses, after.BadResponses, relayed)
	}
}

// observe sends a request of the corpus over transport and records what
// became of it: the answers that came back and the copy the upstream got.
// It runs beside the others, so it reports trouble in o.err, not to a T.
func (tc tortureCase) observe(r *rig, tp *tap, transport string) (o *tortureObs) {
	o = &tortureObs{tp: tp, transport: transport}
	cl, err := dialTorture(transport, r.port(transport))
	if err != nil {
		o.err = err
		return o
	}
	defer cl.close()
	if o.sent, err = tc.prepare(r, transport, cl.localPort); err != nil {
		o.err = err
		return o
	}
	k, needle := key(o.sent)
	o.since = tp.count()
	cl.send(o.sent)

	deadline := time.Now().Add(tortureWait)
	resend := time.Now().Add(500 * time.Millisecond)
	for o.final == nil && time.Now().Before(deadline) {
		next := deadline
		if transport == "udp" && len(o.got) == 0 && resend.Before(next) {
			next = resend
		}
		res := cl.read(next)
		if res == nil {
			if transport == "udp" && len(o.got) == 0 && !time.Now().Before(resend) {
				cl.send(o.sent) // loopback loses little, but it may
				resend = time.Now().Add(time.Second)
			}
			continue
		}
		if k != "" && res.callID != "" && res.callID != k {
			continue
		}
		o.got = append(o.got, res.status)
		if res.status >= 200 {
			o.final = res
		}
	}
	if p := o.final; p != nil && p.parsed != nil && p.parsed.IsSuccess() && p.parsed.CSeq() != nil && p.parsed.CSeq().MethodName == sip.INVITE {
		cl.ack(p.parsed)
	}
	if needle != nil {
		// The final answer came from the upstream or the proxy: a relayed
		// copy is in by now. Without an answer, give it until the deadline.
		until := time.Now().Add(200 * time.Millisecond)
		if o.final == nil {
			until = deadline
		}
		for o.relayed = tp.find(needle, o.since); o.relayed == nil && time.Now().Before(until); o.relayed = tp.find(needle, o.since) {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return o
}

// tortureWait is how long a sender waits for the final answer.
const tortureWait = 3 * time.Second

// evaluate checks what became of a request against the case.
func (tc tortureCase) evaluate(t checker, r *rig, o *tortureObs) {
	if o.err != nil {
		t.Fatal(o.err)
	}
	t.Logf("RFC 4475 %s over %s: responses %v, relayed %v", tc.rfc, o.transport, o.got, o.relayed != nil)
	switch tc.want {
	case wantRelay:
		if o.relayed == nil {
			t.Errorf("valid request not relayed; answers from the proxy: %v%s", o.got, o.final.dump())
			break
		}
		tc.checkRelayed(t, r, o)
		if o.final == nil {
			t.Errorf("relayed, but no final response came back within %v (responses %v)", tortureWait, o.got)
		}
	case wantReject:
		if o.relayed != nil {
			t.Errorf("relayed upstream (final answer %s); want the proxy to answer %v:\n%s", o.final, tc.codes, o.relayed)
			break
		}
		tc.checkRejected(t, o)
	case wantEither:
		if o.relayed != nil {
			tc.checkRelayed(t, r, o)
			break
		}
		tc.checkRejected(t, o)
	}
	if tc.check != nil {
		tc.check(t, o)
	}
}

func (tc tortureCase) checkRejected(t checker, o *tortureObs) {
	t.Helper()
	if o.final == nil {
		if !tc.dropOK && !(tc.tcpDrop && o.transport == "tcp") {
			t.Errorf("no answer over %s; want one of %v", o.transport, tc.codes)
		}
		return
	}
	if !slices.Contains(tc.codes, o.final.status) {
		t.Errorf("answered %s; want one of %v%s", o.final, tc.codes, o.final.dump())
	}
}

// checkRelayed checks the upstream's copy: parseable, the same start line,
// the proxy's Via on top of the sender's, Max-Forwards one lower, the same
// body.
func (tc tortureCase) checkRelayed(t checker, r *rig, o *tortureObs) {
	t.Helper()
	if _, err := sip.NewParser().ParseSIP(o.relayed); err != nil {
		t.Errorf("the upstream cannot parse what the proxy relayed (%v):\n%s", err, o.relayed)
	}
	want := strings.Join(strings.Fields(startLine(o.sent)), " ")
	if tc.startLine != "" {
		want = tc.startLine
	}
	if got := startLine(o.relayed); got != want {
		t.Errorf("relayed start line\n%q\nwant\n%q", got, want)
	}
	sent, relayed := sentBys(o.sent), sentBys(o.relayed)
	// The upstream is on UDP; requests over 1,300 bytes go over TCP, with
	// the Via of the proxy's TCP listener (the same port when it was free).
	ours := fmt.Sprintf("127.0.0.1:%d", r.port("udp"))
	if len(relayed) > 0 && relayed[0] == fmt.Sprintf("127.0.0.1:%d", r.port("tcp")) {
		ours = relayed[0]
	}
	if len(relayed) == 0 || relayed[0] != ours || !slices.Equal(relayed[1:], sent) {
		t.Errorf("relayed Vias (sent-by) %v, want %s on top of %v", relayed, ours, sent)
	}
	wantMF := 70
	if m := mfRe.FindSubmatch(o.sent); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		wantMF = n - 1
	}
	if m := mfRe.FindSubmatch(o.relayed); m == nil || string(m[1]) != strconv.Itoa(wantMF) {
		t.Errorf("relayed Max-Forwards %q, want %d", m, wantMF)
	}
	if got, want := bodyOf(o.relayed), bodyOf(o.sent); !bytes.Equal(got, want) {
		t.Errorf("relayed body (%d bytes) differs from the sent one (%d bytes):\n%q\nwant\n%q", len(got), len(want), got, want)
	}
}

// tortureClient is the sending side of one message: a UDP socket, or a
// TCP connection, with the responses it reads.
type tortureClient struct {
	transport string
	localPort int
	proxy     string
	udp       net.PacketConn
	tcp       net.Conn
	in        chan *tortureRes
	done      chan struct{}
	wg        sync.WaitGroup
}

func dialTorture(transport string, port int) (*tortureClient, error) {
	c := &tortureClient{transport: transport, proxy: fmt.Sprintf("127.0.0.1:%d", port), in: make(chan *tortureRes, 64), done: make(chan struct{})}
	var read func([]byte) (int, error)
	switch transport {
	case "udp":
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		c.udp, c.localPort = conn, conn.LocalAddr().(*net.UDPAddr).Port
		read = func(b []byte) (int, error) { n, _, err := conn.ReadFrom(b); return n, err }
	default:
		conn, err := net.Dial("tcp", c.proxy)
		if err != nil {
			return nil, err
		}
		c.tcp, c.localPort = conn, conn.LocalAddr().(*net.TCPAddr).Port
		read = conn.Read
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		buf := make([]byte, 65535)
		var pending []byte
		for {
			n, err := read(buf)
			if err != nil {
				return
			}
			var msgs [][]byte
			if transport == "udp" {
				msgs = [][]byte{buf[:n]}
			} else {
				pending = append(pending, buf[:n]...)
				msgs, pending = splitSIP(pending)
			}
			for _, m := range msgs {
				res := parseTortureRes(m)
				if res == nil {
					continue
				}
				select {
				case c.in <- res:
				case <-c.done:
					return
				}
			}
		}
	}()
	return c, nil
}

func (c *tortureClient) send(msg []byte) {
	if c.udp != nil {
		addr, _ := net.ResolveUDPAddr("udp", c.proxy)
		c.udp.WriteTo(msg, addr)
		return
	}
	c.tcp.Write(msg)
}

// read waits for the next response until deadline; nil: none.
func (c *tortureClient) read(deadline time.Time) *tortureRes {
	tm := time.NewTimer(time.Until(deadline))
	defer tm.Stop()
	select {
	case res := <-c.in:
		return res
	case <-tm.C:
		return nil
	}
}

// ack acknowledges a 2xx to an INVITE through the proxy (its
// Record-Route) to the answering contact, so the upstream stops
// retransmitting it.
func (c *tortureClient) ack(res *sip.Response) {
	ct, from, to, cid, cseq := res.Contact(), res.From(), res.To(), res.CallID(), res.CSeq()
	if ct == nil || from == nil || to == nil || cid == nil || cseq == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ACK %s SIP/2.0\r\nVia: SIP/2.0/%s 127.0.0.1:%d;branch=%s\r\nMax-Forwards: 70\r\n",
		ct.Address.String(), strings.ToUpper(c.transport), c.localPort, sip.GenerateBranchN(16))
	rr := res.GetHeaders("Record-Route")
	for i := len(rr) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "Route: %s\r\n", rr[i].Value())
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n", from.Value(), to.Value(), cid.Value(), cseq.SeqNo)
	c.send([]byte(b.String()))
}

func (c *tortureClient) close() {
	close(c.done)
	if c.udp != nil {
		c.udp.Close()
	} else {
		c.tcp.Close()
	}
	c.wg.Wait()
}

// splitSIP cuts whole messages off the front of a stream by their
// Content-Length; rest is the incomplete remainder.
func splitSIP(buf []byte) (msgs [][]byte, rest []byte) {
	for {
		buf = bytes.TrimLeft(buf, "\r\n")
		i := bytes.Index(buf, []byte("\r\n\r\n"))
		if i < 0 {
			return msgs, buf
		}
		n := 0
		if c := clRe.FindSubmatch(buf[:i]); c != nil {
			n, _ = strconv.Atoi(string(c[1]))
		}
		end := i + 4 + n
		if end > len(buf) {
			return msgs, buf
		}
		msgs = append(msgs, bytes.Clone(buf[:end]))
		buf = buf[end:]
	}
}

// tap sits between the proxy and the edge peer, on UDP and TCP at one
// port, and keeps a copy of every message the proxy sends upstream: the
// edge peer only records the methods it has handlers for, and a test here
// must see exactly what left the proxy, whatever its method.
type tap struct {
	port   int
	edge   int
	udp    net.PacketConn
	ln     net.Listener
	mu     sync.Mutex
	msgs   [][]byte
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func newTap(t testing.TB, edgePort int) *tap {
	t.Helper()
	var u net.PacketConn
	var l net.Listener
	for range 50 { // UDP and TCP on one free port
		var err error
		if u, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", u.LocalAddr().String()); err == nil {
			break
		}
		u.Close()
		u = nil
	}
	if u == nil {
		t.Fatal("no free port pair for the tap")
	}
	tp := &tap{port: u.LocalAddr().(*net.UDPAddr).Port, edge: edgePort, udp: u, ln: l}
	tp.wg.Add(2)
	go tp.serveUDP()
	go tp.serveTCP()
	t.Cleanup(tp.close)
	return tp
}

func (tp *tap) record(m []byte) {
	tp.mu.Lock()
	tp.msgs = append(tp.msgs, bytes.Clone(m))
	tp.mu.Unlock()
}

func (tp *tap) count() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.msgs)
}

// find returns the first message from the since-th on that matches.
func (tp *tap) find(needle *regexp.Regexp, since int) []byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, m := range tp.msgs[since:] {
		if needle.Match(m) {
			return m
		}
	}
	return nil
}

func (tp *tap) serveUDP() {
	defer tp.wg.Done()
	edge := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tp.edge}
	var proxy net.Addr
	buf := make([]byte, 65535)
	for {
		n, from, err := tp.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if from.(*net.UDPAddr).Port == tp.edge {
			if proxy != nil {
				tp.udp.WriteTo(buf[:n], proxy)
			}
			continue
		}
		proxy = from // the proxy sends from its listening socket
		tp.record(buf[:n])
		tp.udp.WriteTo(buf[:n], edge)
	}
}

func (tp *tap) serveTCP() {
	defer tp.wg.Done()
	for {
		c, err := tp.ln.Accept()
		if err != nil {
			return
		}
		e, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tp.edge))
		if err != nil {
			c.Close()
			continue
		}
		tp.mu.Lock()
		if tp.closed {
			tp.mu.Unlock()
			c.Close()
			e.Close()
			return
		}
		tp.conns = append(tp.conns, c, e)
		tp.wg.Add(2)
		tp.mu.Unlock()
		go func() {
			defer tp.wg.Done()
			io.Copy(c, e)
			c.Close()
		}()
		go func() {
			defer tp.wg.Done()
			defer e.Close()
			buf := make([]byte, 65535)
			var pending []byte
			for {
				n, err := c.Read(buf)
				if n > 0 {
					pending = append(pending, buf[:n]...)
					var msgs [][]byte
					msgs, pending = splitSIP(pending)
					for _, m := range msgs {
						tp.record(m)
					}
					if _, err := e.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (tp *tap) close() {
	tp.udp.Close()
	tp.ln.Close()
	tp.mu.Lock()
	tp.closed = true
	for _, c := range tp.conns {
		c.Close()
	}
	tp.mu.Unlock()
	tp.wg.Wait()
}
