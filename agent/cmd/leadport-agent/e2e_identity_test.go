//go:build linux

package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/detect/passport"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// needSecsipid finds kamailio and its secsipid module (Debian's
// kamailio-secsipid-modules, which scripts/setup.sh installs).
func needSecsipid(t *testing.T) string {
	t.Helper()
	kamailio := synctest.NeedBinary(t, "kamailio")
	mods, _ := filepath.Glob("/usr/lib/*/kamailio/modules/secsipid.so")
	if len(mods) == 0 {
		mods, _ = filepath.Glob("/usr/lib/kamailio/modules/secsipid.so")
	}
	if len(mods) == 0 {
		if os.Getenv("LEADPORT_E2E") == "1" {
			t.Fatal("kamailio's secsipid module is not installed (Debian package kamailio-secsipid-modules; scripts/setup.sh installs it)")
		}
		t.Skip("kamailio's secsipid module is not installed")
	}
	return kamailio
}

// TestSIPpIdentity: SIPp as the PBX -> the agent -> Debian's kamailio with
// the secsipid module as the Leadport edge, checking each INVITE with the
// device's enrolled public key (as `leadport-agent identity` prints it) ->
// SIPp as the far end. The PBX puts a forged Identity on every INVITE: the
// agent must drop it and sign the call itself. Every call completes, the
// far end sees exactly one Identity per INVITE, the agent's, which the
// platform's verifier (detect/passport) accepts in full; an INVITE sent
// straight to the edge gets 428, one whose dest was changed or whose token
// is two minutes old gets 438.
func TestSIPpIdentity(t *testing.T) {
	sipp := needSIPp(t)
	kamailio := needSecsipid(t)
	bin := buildAgent(t)
	r := newRulesRig(t, bin, sipp, "policy:\n  forwarding: {action: \"off\"}\n  pacing: {action: \"off\"}\n  trunking: {action: \"off\"}\n")
	cfg := filepath.Join(r.dir, "agent.yaml")

	// Enrolment: what a technician hands the platform.
	out, err := exec.Command(bin, "identity", "--json", "--config", cfg).Output()
	if err != nil {
		t.Fatalf("leadport-agent identity: %v", err)
	}
	var id agent.Identity
	if err := json.Unmarshal(out, &id); err != nil {
		t.Fatalf("identity --json: %v\n%s", err, out)
	}
	pub, err := passport.ParsePublicKeyPEM([]byte(id.PublicKey))
	if err != nil || id.Alg != "ES256" || id.KeyID != passport.Thumbprint(pub) {
		t.Fatalf("identity %+v: %v", id, err)
	}

	uasPort := freePort(t)
	r.server("uas", "uas.xml", uasPort)
	edgeCfg, err := filepath.Abs(filepath.Join("..", "..", "..", "scripts", "kamailio", "edge-secsipid.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	pemLine := strings.ReplaceAll(id.PublicKey, "\n", `\n`)
	edge := startLogged(t, r.dir, "kamailio", kamailio, "-DD", "-E", "-f", edgeCfg,
		"-P", filepath.Join(r.dir, "kamailio.pid"), "-Y", r.dir,
		"-A", "SIP_PORT="+strconv.Itoa(r.edgePort),
		"-A", fmt.Sprintf(`UAS="sip:127.0.0.1:%d"`, uasPort),
		"-A", fmt.Sprintf(`PUBKEY="%s"`, pemLine))
	t.Cleanup(func() { edge.stop(t, syscall.SIGTERM, 10*time.Second) })
	waitListening(t, edge, "kamailio", "udp", r.edgePort)

	// Calls, then the agent killed with SIGKILL and started again, more
	// calls, a clean restart, more calls: the counter must only rise.
	calls := 0
	place := func(name string, n int) {
		uac := r.client(name, "identity-uac.xml", r.localPort, "-s", sippCallee, "-m", strconv.Itoa(n), "-r", "5", "-d", "100")
		r.finish(uac, n)
		calls += n
	}
	restart := func(name string, sig syscall.Signal) {
		r.agent.stop(t, sig, 15*time.Second)
		r.agent = startLogged(t, r.dir, name, bin, "run", "--config", cfg)
		waitListening(t, r.agent, "leadport-agent", "udp", r.localPort)
		waitListening(t, r.agent, "leadport-agent", "udp", r.upPort)
	}
	place("uac", 10)
	restart("agent-after-kill", syscall.SIGKILL)
	place("uac-after-kill", 3)
	restart("agent-after-term", syscall.SIGTERM)
	place("uac-after-term", 3)
	if b, _ := os.ReadFile(edge.log); strings.Count(string(b), "identity: verified") != calls {
		dumpFiles(t, r.dir, "kamailio.log")
		t.Fatalf("the edge verified %d INVITEs, want %d", strings.Count(string(b), "identity: verified"), calls)
	}

	// What reached the far end: one Identity per INVITE, the agent's, which
	// the platform's own verifier takes whole (signature, freshness, orig,
	// dest, call binding), counters strictly rising.
	v := &passport.Verifier{}
	var last uint64
	invites := 0
	for _, m := range r.messages("uas") {
		if m.sent || m.method() != "INVITE" {
			continue
		}
		invites++
		var ids []string
		for _, h := range m.headers {
			if n, val, ok := strings.Cut(h, ":"); ok && (strings.EqualFold(strings.TrimSpace(n), "identity") || strings.EqualFold(strings.TrimSpace(n), "y")) {
				ids = append(ids, strings.TrimSpace(val))
			}
		}
		if len(ids) != 1 || strings.Contains(ids[0], "forged") {
			t.Fatalf("INVITE %s reached the edge's far side with Identity %q: want the agent's alone", m.header("Call-ID"), ids)
		}
		req, err := parseRawRequest([]byte(m.first + "\n" + strings.Join(m.headers, "\n") + "\n\n"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(req, pub)
		if err != nil {
			t.Fatalf("INVITE %s: %v", m.header("Call-ID"), err)
		}
		if c.Device != id.DeviceID || c.Verdict != passport.Allowed || c.Counter <= last || m.header("Date") == "" {
			dumpFiles(t, r.dir, "agent.log", "agent-after-kill.log")
			t.Fatalf("INVITE %s: claims %+v (Date %q), after counter %d", m.header("Call-ID"), c, m.header("Date"), last)
		}
		last = c.Counter
		if invites == 1 {
			checkFleetVerify(t, bin, r.dir, id.PublicKey, m)
		}
	}
	if invites != calls {
		t.Fatalf("the far end received %d INVITEs, want %d", invites, calls)
	}

	// Straight to the edge, skipping the agent: refused.
	key, err := passport.LoadKey(filepath.Join(r.data, agent.IdentityKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(iat time.Time, dest string) string {
		tok, err := passport.Sign(key, passport.Header{X5U: id.Info}, passport.Claims{
			CallBinding: passport.Binding("direct", "t1"), Counter: 1 << 40, Dest: passport.Dest{TN: []string{dest}},
			Device: id.DeviceID, IssuedAt: iat.Unix(), Orig: passport.Orig{TN: sippLine},
			OrigID: passport.NewOrigID(), Verdict: passport.Allowed,
		})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tampered := func(tok string) string {
		// The same signature over a payload whose dest now names another
		// number: what a PBX that rewrote a captured header would send.
		parts := strings.Split(tok, ".")
		p, _ := base64.RawURLEncoding.DecodeString(parts[1])
		p = []byte(strings.Replace(string(p), "15557654321", "15559990000", 1))
		parts[1] = base64.RawURLEncoding.EncodeToString(p)
		return strings.Join(parts, ".")
	}
	for _, tc := range []struct {
		name, identity string
		want           int
	}{
		{"no Identity", "", 428},
		{"dest changed", passport.IdentityHeader(tampered(sign(time.Now(), sippCallee)), id.Info), 438},
		{"two minutes old", passport.IdentityHeader(sign(time.Now().Add(-2*time.Minute), sippCallee), id.Info), 438},
	} {
		if got := rawInvite(t, r.edgePort, tc.identity); got != tc.want {
			dumpFiles(t, r.dir, "kamailio.log")
			t.Errorf("%s straight to the edge: %d, want %d", tc.name, got, tc.want)
		}
	}
	r.stop()
}

// rawInvite sends one INVITE over UDP to port on loopback, with the given
// Identity (none when empty), and returns the status of the first final
// response.
func rawInvite(t *testing.T, port int, identity string) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	hdr := ""
	if identity != "" {
		hdr = "Identity: " + identity + "\r\n"
	}
	msg := fmt.Sprintf("INVITE sip:%s@127.0.0.1:%d SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK%d;rport\r\n"+
		"From: <sip:%s@127.0.0.1>;tag=t1\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: direct\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:%s@%s>\r\nMax-Forwards: 70\r\n%sContent-Length: 0\r\n\r\n",
		sippCallee, port, local, time.Now().UnixNano(), sippLine, sippCallee, sippLine, local, hdr)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	buf := make([]byte, 65535)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.WriteTo([]byte(msg), to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break // resend
			}
			f := strings.Fields(string(buf[:n]))
			if len(f) > 1 && f[0] == "SIP/2.0" {
				if code, _ := strconv.Atoi(f[1]); code >= 200 {
					return code
				}
			}
		}
	}
	t.Fatalf("no final response from 127.0.0.1:%d", port)
	return 0
}

// TestSyncIdentityRotate: the device publishes its call-signing key
// retained on its identity topic; a signed identity.rotate, sent with the
// platform's tools through a real broker, makes a new key: the receipt
// carries it, the identity topic and `leadport-agent identity` show it,
// the key file holds it, and a restart keeps it.
func TestSyncIdentityRotate(t *testing.T) {
	r := newSyncRig(t)
	a := r.start("agent")
	const topic = "leadport/v1/dev/pbx-e2e/identity"
	latest := func() (id agent.Identity, ok bool) {
		r.broker.Got.Mu.Lock()
		defer r.broker.Got.Mu.Unlock()
		msgs := r.broker.Got.Msg[topic]
		if len(msgs) == 0 {
			return id, false
		}
		if err := json.Unmarshal(msgs[len(msgs)-1], &id); err != nil {
			t.Fatalf("identity document %s: %v", msgs[len(msgs)-1], err)
		}
		return id, true
	}
	var before agent.Identity
	pollUntil(t, 30*time.Second, "the identity at the broker", func() bool {
		var ok bool
		before, ok = latest()
		return ok
	})
	pub, err := passport.ParsePublicKeyPEM([]byte(before.PublicKey))
	if err != nil || before.DeviceID != "pbx-e2e" || before.KeyID != passport.Thumbprint(pub) || before.Alg != "ES256" {
		t.Fatalf("published identity %+v: %v", before, err)
	}

	r.sendCommand("rotate-e2e", "identity.rotate", "")
	var receipt struct {
		Status string         `json:"status"`
		Result agent.Identity `json:"result"`
	}
	if err := json.Unmarshal(r.waitReceipt("rotate-e2e"), &receipt); err != nil {
		t.Fatal(err)
	}
	after := receipt.Result
	newPub, err := passport.ParsePublicKeyPEM([]byte(after.PublicKey))
	if receipt.Status != "done" || err != nil || after.KeyID == before.KeyID || after.KeyID != passport.Thumbprint(newPub) {
		t.Fatalf("receipt %+v: %v", receipt, err)
	}
	pollUntil(t, 30*time.Second, "the new identity at the broker", func() bool {
		id, _ := latest()
		return id.KeyID == after.KeyID
	})
	keyPath := filepath.Join(r.data, agent.IdentityKeyFile)
	k, err := passport.LoadKey(keyPath)
	if err != nil || passport.Thumbprint(k.PublicKey()) != after.KeyID {
		t.Fatalf("the key file after the rotation: %v", err)
	}
	// A decommissioning erase takes the records, not the device's
	// enrolment: the key file is untouched.
	keyBefore, _ := os.ReadFile(keyPath)
	r.sendCommand("erase-all-e2e", "erase", `{"all":true}`)
	if rec := r.waitReceipt("erase-all-e2e"); !strings.Contains(string(rec), `"status":"done"`) {
		t.Fatalf("erase-all receipt %s", rec)
	}
	if keyAfter, err := os.ReadFile(keyPath); err != nil || string(keyAfter) != string(keyBefore) {
		t.Errorf("erase-all changed the call-signing key file: %v", err)
	}
	a.stop(t, syscall.SIGTERM, 15*time.Second)
	// Without a running agent, identity reads the key file.
	var id agent.Identity
	if err := json.Unmarshal(r.cli("identity", "--json", "--config", r.config), &id); err != nil || id.KeyID != after.KeyID || id.DeviceID != "pbx-e2e" {
		t.Fatalf("leadport-agent identity after the rotation: %+v, %v", id, err)
	}
}

// checkFleetVerify runs `leadport-agent fleet verify` on an INVITE as the
// edge received it, pasted with LF line ends: valid (exit 0), and invalid
// (exit 1, naming the cause) once its Call-ID is changed.
func checkFleetVerify(t *testing.T, bin, dir, pubPEM string, m sippMsg) {
	t.Helper()
	keyFile := filepath.Join(dir, "device-identity.pem")
	writeFile(t, keyFile, pubPEM)
	raw := m.first + "\n" + strings.Join(m.headers, "\n") + "\n"
	verify := func(text string) (string, int) {
		cmd := exec.Command(bin, "fleet", "verify", "--key", keyFile, "-")
		cmd.Stdin = strings.NewReader(text)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	if out, code := verify(raw); code != 0 || !strings.Contains(out, "VALID: signed by key") || !strings.Contains(out, `"ctr"`) {
		t.Errorf("fleet verify of the INVITE as received: exit %d\n%s", code, out)
	}
	cid := m.header("Call-ID")
	if out, code := verify(strings.Replace(raw, cid, "another-"+cid, 1)); code != 1 || !strings.Contains(out, "INVALID: ") || !strings.Contains(out, "another Call-ID") {
		t.Errorf("fleet verify of the INVITE with another Call-ID: exit %d\n%s", code, out)
	}
}
