//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
)

// Numbers of the rules tests besides sippLine and sippCallee. The
// scenarios in scripts/sipp/rules-*.xml name the outside caller, the
// forwarding target and (like uac.xml) the line themselves.
const (
	rulesCaller  = "+15559870000" // an outside number calling the line, or diverted from it
	rulesTarget  = "+15559990000" // where the PBX forwards or transfers a call on the line
	rulesCallee2 = "+15553332222" // the callee of the second, concurrent call
)

// rulesPacingCallees are the auto-dialer's callees: all different (no call
// is a redial, which the gap signal excuses) and never within
// sequential_step of the previous one, so that the short gap after each
// hang-up is what trips the pacing rule.
var rulesPacingCallees = []string{
	"+15557654321", "+15553332222", "+15554445566", "+15552229876",
	"+15556661234", "+15558887777", "+15551119999", "+15554440000",
}

// TestSIPpRules runs the rules of issue 4 end to end: real SIPp through
// the real binary, one agent (with its own data dir) per case, because a
// pacing cool-down lasts 15 minutes. The cases run in parallel; each
// asserts through SIPp's exit status and call counts, the scenario's own
// expectations (the status, and the Warning naming the rule: a wrong one
// fails the call), the messages each SIPp sent and received, and the
// records in the agent's store after it stopped. No agent log may carry a
// test number whole.
//
// The two sides of the agent have their own sockets (sip.listen for the
// PBX, sip.upstream_listen for the Leadport edge), so direction is clear
// on loopback.
func TestSIPpRules(t *testing.T) {
	sipp := needSIPp(t)
	bin := buildAgent(t)
	cases := []struct {
		name   string
		policy string // the config's policy section; empty: the defaults
		run    func(*rulesRig)
	}{
		{"pacing", `policy:
  pacing: {action: block, max_attempts_per_minute: 6, min_gap_after_call_s: 2, short_gaps: 2, cooldown_s: 900}
`, testRulesPacing},
		{"redirect", "", testRulesRedirect},
		{"diversion", "", testRulesDiversion},
		{"refer", "", testRulesRefer},
		{"concurrent", "", testRulesConcurrent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(newRulesRig(t, bin, sipp, c.policy))
		})
	}
}

// testRulesPacing: SIPp dials from the line like an auto-dialer, 1.5
// calls a second, each call 200 ms, a new callee each time, so every
// attempt but the first comes about half a second after the previous call
// hung up. The policy (min_gap_after_call_s 2, short_gaps 2) trips at the
// third attempt; it and every later one must get 403 naming "pacing", the
// first two are answered.
func testRulesPacing(r *rulesRig) {
	t := r.t
	const calls = 8
	answered := 2 // the third attempt is the second short gap
	inf := filepath.Join(r.dir, "callees.csv")
	writeFile(t, inf, "SEQUENTIAL\n"+strings.Join(rulesPacingCallees[:calls], ";\n")+";\n")

	uas := r.server("uas", "uas.xml", r.edgePort)
	uac := r.client("uac", "rules-pacing-uac.xml", r.localPort,
		"-inf", inf, "-d", "200", "-r", "3", "-rp", "2000", "-m", strconv.Itoa(calls))
	r.finish(uac, calls)

	// The scenario logs each call's outcome; refusals were checked by it
	// to carry the pacing Warning.
	outcome := r.sippLog("uac")
	for n := 1; n <= calls; n++ {
		want := "answered"
		if n > answered {
			want = "refused"
		}
		if got := outcome[n]; got != want {
			t.Errorf("call %d (%s): %q, want %s", n, rulesPacingCallees[n-1], got, want)
		}
	}
	warned := 0
	for _, m := range r.messages("uac") {
		if !m.sent && m.status() == 403 && m.header("Warning") == `399 leadport-agent "pacing"` {
			warned++
		}
	}
	if warned != calls-answered {
		t.Errorf("SIPp received %d 403s with Warning naming pacing, want %d", warned, calls-answered)
	}
	if n := len(r.received(uas, "INVITE")); n != answered {
		t.Errorf("the upstream received %d INVITEs, want %d: refused attempts must not reach it", n, answered)
	}

	usage, viols := r.stop()
	var ok, blocked int
	for _, u := range usage {
		switch {
		case u.Disposition == "answered" && u.Direction == "outbound" && u.Line == sippLine:
			ok++
		case u.Disposition == "blocked" && u.BlockedBy == "pacing" && u.FinalStatus == 403 && u.Line == sippLine:
			blocked++
		default:
			t.Errorf("unexpected usage record: %+v", *u)
		}
	}
	if ok != answered || blocked != calls-answered {
		t.Errorf("usage records: %d answered, %d blocked by pacing; want %d and %d", ok, blocked, answered, calls-answered)
	}
	if len(viols) == 0 {
		t.Fatal("no violation record; want one of rule pacing")
	}
	for _, v := range viols {
		if v.Rule != "pacing" || v.Action != "blocked" || v.Line != sippLine {
			t.Errorf("violation: rule %q, action %q, line %q; want pacing, blocked, %s", v.Rule, v.Action, v.Line, sippLine)
		}
	}
	// The first names the figures that tripped the rule; later ones the
	// cool-down they fell in.
	ev := evidence(t, viols[0])
	if ev["signal"] != "gap_after_call" {
		t.Errorf("first pacing violation: evidence %v, want signal gap_after_call", ev)
	}
	if ids := r.callIDs("uac", "INVITE"); len(ids) != calls || viols[0].CallID != ids[answered] {
		t.Errorf("first pacing violation is of call %q, want the third attempt's (calls %q)", viols[0].CallID, ids)
	}
}

// testRulesRedirect: the edge calls the line; the PBX (sip.local) answers
// 302 to forward it. The edge must get 403 naming forwarding.redirect,
// never the 3xx, and the PBX must get its 302 ACKed.
func testRulesRedirect(r *rulesRig) {
	t := r.t
	pbx := r.server("pbx", "rules-redirect-pbx.xml", r.pbxPort, "-m", "1")
	edge := r.clientAt("edge", "rules-redirect-edge.xml", r.edgePort, r.upPort, "-s", sippLine, "-m", "1")
	r.finish(edge, 1)
	r.finish(pbx, 1) // INVITE received, 302 sent, ACK received

	for _, m := range r.messages("edge") {
		if !m.sent && m.status() >= 300 && m.status() < 400 {
			t.Errorf("the edge received %q: a 3xx from the local side must not be relayed", m.first)
		}
	}
	usage, viols := r.stop()
	if len(usage) != 1 {
		t.Fatalf("%d usage records, want 1", len(usage))
	}
	if u := usage[0]; u.Direction != "inbound" || u.Line != sippLine || u.Remote != rulesCaller ||
		u.Disposition != "blocked" || u.BlockedBy != "forwarding.redirect" || u.FinalStatus != 403 {
		t.Errorf("usage record %+v; want inbound on %s from %s, blocked by forwarding.redirect, 403", *u, sippLine, rulesCaller)
	}
	v := oneViolation(t, viols, "forwarding.redirect")
	if !contains(v.Numbers, rulesTarget) {
		t.Errorf("violation numbers %v, want the forwarding target %s", v.Numbers, rulesTarget)
	}
}

// testRulesDiversion: the PBX sends a call out again with a Diversion
// header naming the line. It must get 403 naming forwarding.diversion and
// the upstream must never see it; a plain call afterwards shows the
// upstream was there to see it.
func testRulesDiversion(r *rulesRig) {
	t := r.t
	uas := r.server("uas", "uas.xml", r.edgePort)
	uac := r.client("uac", "rules-diversion-uac.xml", r.localPort, "-s", sippCallee, "-m", "1")
	r.finish(uac, 1)
	control := r.client("control", "uac.xml", r.localPort, "-s", sippCallee, "-d", "100", "-m", "1")
	r.finish(control, 1)

	diverted, relayed := r.callIDs("uac", "INVITE"), r.callIDs("control", "INVITE")
	if len(diverted) != 1 || len(relayed) != 1 {
		t.Fatalf("SIPp sent INVITEs of calls %q (diverted) and %q (control), want one each", diverted, relayed)
	}
	if got := r.received(uas, "INVITE"); len(got) != 1 || got[0] != relayed[0] {
		t.Errorf("the upstream received INVITEs of calls %q, want only the control call's %q (the diverted one was %q)", got, relayed[0], diverted[0])
	}
	usage, viols := r.stop()
	for _, u := range usage {
		if u.Disposition == "answered" && u.Line == sippLine && u.Remote == sippCallee {
			continue // the control call
		}
		t.Errorf("unexpected usage record: %+v", *u)
	}
	v := oneViolation(t, viols, "forwarding.diversion")
	if v.CallID != diverted[0] {
		t.Errorf("violation of call %q, want the diverted call %q", v.CallID, diverted[0])
	}
}

// testRulesRefer: a call from the line is answered, then the caller tries
// to transfer it. The REFER must get 403 naming forwarding.refer and not
// reach the upstream; the call stays up and ends with BYE / 200.
func testRulesRefer(r *rulesRig) {
	t := r.t
	uas := r.server("uas", "uas.xml", r.edgePort)
	uac := r.client("uac", "rules-refer-uac.xml", r.localPort, "-s", sippCallee, "-d", "500", "-m", "1")
	r.finish(uac, 1)

	var refused, byeOK bool
	for _, m := range r.messages("uac") {
		if m.sent {
			continue
		}
		switch m.cseqMethod() {
		case "REFER":
			refused = refused || (m.status() == 403 && m.header("Warning") == `399 leadport-agent "forwarding.refer"`)
		case "BYE":
			byeOK = byeOK || m.status() == 200
		}
	}
	if !refused || !byeOK {
		t.Errorf("caller: REFER refused with the Warning %v, BYE answered 200 %v; want both", refused, byeOK)
	}
	if n := len(r.received(uas, "REFER")); n != 0 {
		t.Errorf("the upstream received %d REFERs, want none", n)
	}
	if n := len(r.received(uas, "BYE")); n != 1 {
		t.Errorf("the upstream received %d BYEs, want 1: the call stays up after the refused transfer", n)
	}
	usage, viols := r.stop()
	if len(usage) != 1 {
		t.Fatalf("%d usage records, want 1", len(usage))
	}
	// Answered, then 200 ms to the REFER and 500 ms after its 403.
	if u := usage[0]; u.Disposition != "answered" || u.Direction != "outbound" || u.Line != sippLine || u.DurationS < 0.65 || u.DurationS > 5 {
		t.Errorf("usage record %+v; want an answered outbound call on %s of about 0.7 s", *u, sippLine)
	}
	v := oneViolation(t, viols, "forwarding.refer")
	if !contains(v.Numbers, rulesTarget) {
		t.Errorf("violation numbers %v, want the transfer target %s", v.Numbers, rulesTarget)
	}
}

// testRulesConcurrent: while a call from the line is up, the PBX places a
// second one. It must get 486 naming trunking.concurrent; the first call
// goes on and ends normally. (Two outbound attempts at once are also
// machine-paced dialing, pacing's max_parallel; trunking.concurrent comes
// first, and its status is the answer.)
func testRulesConcurrent(r *rulesRig) {
	t := r.t
	uas := r.server("uas", "uas.xml", r.edgePort)
	first := r.client("first", "uac.xml", r.localPort, "-s", sippCallee, "-d", "2500", "-m", "1")
	// Up: the 200 arrived and SIPp sent the ACK.
	r.waitMessage(first, "sending the ACK", func(m sippMsg) bool { return m.sent && strings.HasPrefix(m.first, "ACK ") })
	second := r.client("second", "rules-busy-uac.xml", r.localPort, "-s", rulesCallee2, "-m", "1")
	r.finish(second, 1)
	if first.exited() {
		t.Error("the first call ended before the second was refused; make it longer")
	}
	r.finish(first, 1)

	firstIDs, secondIDs := r.callIDs("first", "INVITE"), r.callIDs("second", "INVITE")
	if len(firstIDs) != 1 || len(secondIDs) != 1 {
		t.Fatalf("SIPp sent INVITEs of calls %q (first) and %q (second), want one each", firstIDs, secondIDs)
	}
	if got := r.received(uas, "INVITE"); len(got) != 1 || got[0] != firstIDs[0] {
		t.Errorf("the upstream received INVITEs of calls %q, want only the first call's %q", got, firstIDs[0])
	}
	usage, viols := r.stop()
	var ok, busy int
	for _, u := range usage {
		switch {
		case u.Disposition == "answered" && u.Remote == sippCallee && u.DurationS >= 2.4:
			ok++
		case u.Disposition == "blocked" && u.Remote == rulesCallee2 && u.BlockedBy == "trunking.concurrent" && u.FinalStatus == 486:
			busy++
		default:
			t.Errorf("unexpected usage record: %+v", *u)
		}
	}
	if ok != 1 || busy != 1 {
		t.Errorf("usage records: %d answered calls of 2.5 s, %d blocked by trunking.concurrent; want 1 of each", ok, busy)
	}
	v := oneViolation(t, viols, "trunking.concurrent")
	if v.CallID != secondIDs[0] {
		t.Errorf("violation of call %q, want the second call's %q", v.CallID, secondIDs[0])
	}
}

// rulesRig is one agent between SIPp playing the PBX and the Leadport edge.
type rulesRig struct {
	t          *testing.T
	sipp, scen string
	dir, data  string
	agent      *proc
	// The agent's sockets: sip.listen (the PBX side) and
	// sip.upstream_listen (the edge side).
	localPort, upPort int
	// Where the agent relays to: sip.upstream (the edge) and sip.local
	// (the PBX).
	edgePort, pbxPort int
}

func newRulesRig(t *testing.T, bin, sipp, policy string) *rulesRig {
	t.Helper()
	dir := t.TempDir()
	r := &rulesRig{
		t: t, sipp: sipp, scen: sippScenarios(t), dir: dir, data: filepath.Join(dir, "data"),
		localPort: freePort(t), upPort: freePort(t), edgePort: freePort(t), pbxPort: freePort(t),
	}
	cfg := filepath.Join(dir, "agent.yaml")
	// Debug logging: the most the agent ever logs must still mask numbers.
	writeFile(t, cfg, fmt.Sprintf(`data_dir: %s
lines: [%q]
default_country: "1"
log: {level: debug}
api: {socket: %s}
sip:
  listen: ["udp://127.0.0.1:%d"]
  upstream_listen: ["udp://127.0.0.1:%d"]
  upstream: "udp://127.0.0.1:%d"
  local: "udp://127.0.0.1:%d"
%s`, r.data, sippLine, filepath.Join(dir, "api.sock"), r.localPort, r.upPort, r.edgePort, r.pbxPort, policy))
	r.agent = startLogged(t, dir, "agent", bin, "run", "--config", cfg)
	waitListening(t, r.agent, "leadport-agent", "udp", r.localPort)
	waitListening(t, r.agent, "leadport-agent", "udp", r.upPort)
	return r
}

// sippArgs are the arguments every SIPp of a rig gets: its scenario, its
// socket, and its traces under the rig's directory, named after it.
func (r *rulesRig) sippArgs(name, scenario string, port int) []string {
	f := func(suffix string) string { return filepath.Join(r.dir, name+suffix) }
	return []string{
		"-sf", filepath.Join(r.scen, scenario), "-i", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "u1", "-nostdin",
		"-trace_msg", "-message_file", f("_msgs.log"),
		"-trace_logs", "-log_file", f("_logs.log"),
		"-trace_stat", "-stf", f("_stat.csv"),
		"-trace_err", "-error_file", f("_errors.log"),
	}
}

// server starts a SIPp UAS on port and waits until it listens.
func (r *rulesRig) server(name, scenario string, port int, args ...string) *proc {
	r.t.Helper()
	p := startLogged(r.t, r.dir, name, r.sipp, append(r.sippArgs(name, scenario, port), args...)...)
	waitListening(r.t, p, "SIPp "+name, "udp", port)
	return p
}

// client starts a SIPp UAC on a port of its own, calling the agent at
// target.
func (r *rulesRig) client(name, scenario string, target int, args ...string) *proc {
	r.t.Helper()
	return r.clientAt(name, scenario, freePort(r.t), target, args...)
}

// clientAt starts a SIPp UAC on port, calling the agent at target. A call
// fails when an expected message is 5 s late; the run, after 30 s.
func (r *rulesRig) clientAt(name, scenario string, port, target int, args ...string) *proc {
	r.t.Helper()
	args = append(append(r.sippArgs(name, scenario, port),
		"-recv_timeout", "5000", "-timeout", "30s", "-timeout_error"), args...)
	args = append(args, "127.0.0.1:"+strconv.Itoa(target))
	r.t.Logf("%s: sipp %s", name, strings.Join(args, " "))
	return startLogged(r.t, r.dir, name, r.sipp, args...)
}

// finish waits for a SIPp to exit, which must be with status 0 after
// exactly `calls` successful calls and none failed.
func (r *rulesRig) finish(p *proc, calls int) {
	r.t.Helper()
	select {
	case <-p.done:
	case <-time.After(45 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		r.dump(p.name)
		r.t.Fatalf("SIPp %s did not exit within 45 s", p.name)
	}
	ok, failed := sippCounts(r.t, filepath.Join(r.dir, p.name+"_stat.csv"))
	if p.err != nil || ok != calls || failed != 0 {
		r.dump(p.name)
		r.t.Fatalf("SIPp %s: exit %v, %d successful and %d failed calls; want exit 0 and %d successful", p.name, p.err, ok, failed, calls)
	}
}

func (r *rulesRig) dump(names ...string) {
	r.t.Helper()
	var files []string
	for _, n := range names {
		files = append(files, n+"_errors.log", n+"_logs.log", n+"_msgs.log")
	}
	dumpFiles(r.t, r.dir, append(files, "agent.log")...)
}

// stop stops the agent with SIGTERM, checks that its log carries no test
// number whole, and returns the usage and violation records it stored,
// violations in the order they happened.
func (r *rulesRig) stop() ([]*store.Usage, []*store.Violation) {
	t := r.t
	t.Helper()
	r.agent.stop(t, syscall.SIGTERM, 30*time.Second)
	if t.Failed() {
		dumpFiles(t, r.dir, "agent.log")
	}
	logText, err := os.ReadFile(r.agent.log)
	if err != nil {
		t.Fatal(err)
	}
	numbers := append([]string{sippLine, sippCallee, rulesCaller, rulesTarget, rulesCallee2}, rulesPacingCallees...)
	for _, n := range numbers {
		for _, form := range []string{n, n[1:]} {
			if strings.Contains(string(logText), form) {
				t.Errorf("the agent's log carries the number %s whole", form)
			}
		}
	}

	s, err := store.Open(store.Options{Dir: r.data})
	if err != nil {
		t.Fatalf("open the agent's store: %v", err)
	}
	defer s.Close()
	var usage []*store.Usage
	var viols []*store.Violation
	for _, typ := range []store.Type{store.TypeUsage, store.TypeViolation} {
		recs, err := s.Pending(typ, store.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			p, err := rec.Decode()
			if err != nil {
				t.Fatalf("record %s: %v", rec.ID, err)
			}
			switch p := p.(type) {
			case *store.Usage:
				usage = append(usage, p)
			case *store.Violation:
				viols = append(viols, p)
				t.Logf("violation: rule %s, action %s, at %s, evidence %s", p.Rule, p.Action, p.At.Format(time.RFC3339Nano), p.Evidence)
			default:
				t.Fatalf("record %s of type %v is a %T", rec.ID, typ, p)
			}
		}
	}
	sort.SliceStable(viols, func(i, j int) bool { return viols[i].At.Before(viols[j].At) })
	return usage, viols
}

// oneViolation returns the violation of rule, which must be there once,
// blocked, on the test line. Others may be there too.
func oneViolation(t *testing.T, viols []*store.Violation, rule string) *store.Violation {
	t.Helper()
	var found []*store.Violation
	for _, v := range viols {
		if v.Rule == rule {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d violation records of rule %s, want 1", len(found), rule)
	}
	v := found[0]
	if v.Action != "blocked" || v.Line != sippLine {
		t.Errorf("violation %s: action %q, line %q; want blocked, %s", rule, v.Action, v.Line, sippLine)
	}
	return v
}

func evidence(t *testing.T, v *store.Violation) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(v.Evidence, &m); err != nil {
		t.Errorf("violation %s evidence %s: %v", v.Rule, v.Evidence, err)
	}
	return m
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sippLogLine is a line the rules scenarios log for a call:
// "call N answered", "call N refused: ...".
var sippLogLine = regexp.MustCompile(`^call (\d+) (\w+)`)

// sippLog reads a SIPp's -log_file: each call's outcome by call number.
func (r *rulesRig) sippLog(name string) map[int]string {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, name+"_logs.log"))
	if err != nil {
		r.t.Fatalf("SIPp %s log: %v", name, err)
	}
	out := map[int]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if m := sippLogLine.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out[n] = m[2]
		}
	}
	return out
}

// sippMsg is one message of a SIPp -trace_msg file.
type sippMsg struct {
	at      time.Time // when SIPp sent or received it
	sent    bool
	first   string   // the request or status line
	headers []string // "Name: value"
}

// status is a response's status code, 0 for a request.
func (m sippMsg) status() int {
	if !strings.HasPrefix(m.first, "SIP/2.0 ") {
		return 0
	}
	n, _ := strconv.Atoi(strings.Fields(m.first)[1])
	return n
}

// method is a request's method, "" for a response.
func (m sippMsg) method() string {
	if m.status() != 0 {
		return ""
	}
	f, _, _ := strings.Cut(m.first, " ")
	return f
}

// header returns the value of the first header named name (or its
// compact form), "" when there is none.
func (m sippMsg) header(name string) string {
	compact := map[string]string{"call-id": "i", "via": "v", "from": "f", "to": "t", "contact": "m"}[strings.ToLower(name)]
	for _, h := range m.headers {
		n, v, ok := strings.Cut(h, ":")
		if ok && (strings.EqualFold(strings.TrimSpace(n), name) || (compact != "" && strings.EqualFold(strings.TrimSpace(n), compact))) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m sippMsg) cseqMethod() string {
	f := strings.Fields(m.header("CSeq"))
	if len(f) != 2 {
		return ""
	}
	return f[1]
}

// messages reads the messages a SIPp sent and received so far.
func (r *rulesRig) messages(name string) []sippMsg {
	r.t.Helper()
	f, err := os.Open(filepath.Join(r.dir, name+"_msgs.log"))
	if os.IsNotExist(err) {
		return nil // nothing sent or received yet
	}
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	// A message: "-----...----- <time>", "UDP message sent (N bytes):" or
	// "UDP message received [N] bytes :", a blank line, then the message
	// with CRLF line ends.
	var out []sippMsg
	var cur *sippMsg
	var at time.Time
	inHeaders := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(l, "-----------------------------------------------"):
			cur, inHeaders = nil, false
			at, _ = time.ParseInLocation("2006-01-02 15:04:05.000000", strings.TrimSpace(strings.TrimLeft(l, "-")), time.Local)
		case cur == nil && strings.Contains(l, " message sent"):
			out = append(out, sippMsg{sent: true, at: at})
			cur = &out[len(out)-1]
		case cur == nil && strings.Contains(l, " message received"):
			out = append(out, sippMsg{at: at})
			cur = &out[len(out)-1]
		case cur == nil:
		case cur.first == "":
			if l != "" {
				cur.first, inHeaders = l, true
			}
		case inHeaders && l == "":
			inHeaders = false
		case inHeaders:
			cur.headers = append(cur.headers, l)
		}
	}
	if err := sc.Err(); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// received returns the Call-IDs of the requests of method that a SIPp
// received, retransmissions once.
func (r *rulesRig) received(p *proc, method string) []string {
	return r.requests(p.name, method, false)
}

// callIDs returns the Call-IDs of the requests of method that a SIPp sent,
// retransmissions once, in order.
func (r *rulesRig) callIDs(name, method string) []string {
	return r.requests(name, method, true)
}

func (r *rulesRig) requests(name, method string, sent bool) []string {
	var ids []string
	seen := map[string]bool{}
	for _, m := range r.messages(name) {
		if m.sent != sent || m.method() != method {
			continue
		}
		key := m.header("Call-ID") + " " + m.header("CSeq")
		if !seen[key] {
			seen[key] = true
			ids = append(ids, m.header("Call-ID"))
		}
	}
	return ids
}

// waitMessage polls a SIPp's message trace until a message satisfies
// match, failing after 10 s or when the SIPp exits first.
func (r *rulesRig) waitMessage(p *proc, what string, match func(sippMsg) bool) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, m := range r.messages(p.name) {
			if match(m) {
				return
			}
		}
		if p.exited() {
			r.dump(p.name)
			r.t.Fatalf("SIPp %s exited (%v) before %s", p.name, p.err, what)
		}
		select {
		case <-ctx.Done():
			r.dump(p.name)
			r.t.Fatalf("SIPp %s: no %s within 10 s", p.name, what)
		case <-tick.C:
		}
	}
}
