//go:build linux

package api

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// peerEnv makes the test binary a client: it posts a consent over the
// socket the variable names, as whatever user it was started as, and
// prints the status and body.
const peerEnv = "LEADPORT_API_TEST_PEER"

func TestMain(m *testing.M) {
	if sock := os.Getenv(peerEnv); sock != "" {
		os.Exit(peerClient(sock))
	}
	os.Exit(m.Run())
}

func peerClient(sock string) int {
	res, err := unixClient(sock).Post("http://agent/v1/consent", "application/json", strings.NewReader(goodConsent))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	fmt.Printf("%d %s", res.StatusCode, b)
	return 0
}

// TestWritePeers: real processes running as other users post a consent
// over the socket; the kernel's credentials decide, and the record says
// who it was.
func TestWritePeers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to start clients as other users (CI runs as root)")
	}
	src := &fakeSource{}
	sv := serve(t, newServer(src, testAccounts))
	// A copy of this binary that other users may run: the build's own
	// directory is private.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(sv.sock), "peer")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		uid, gid uint32
		groups   []uint32
		status   int
		author   string // on success
		refusal  string
	}{
		{"outsider", 65534, 65534, nil, 403, "", "nobody may not change the agent's state"},
		// SO_PEERCRED carries no supplementary groups, and reading them
		// from /proc by pid would race with pid reuse: the account
		// database decides.
		{"outsider with the group only in its process", 65534, 65534, []uint32{4243}, 403, "", "nobody may not"},
		{"the service user", 4242, 4243, nil, 201, "leadport-agent", ""},
		{"the service group as primary group", 65534, 4243, nil, 201, "nobody", ""},
		{"a member of the service group", 65533, 65533, nil, 201, "tech", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(src.stored())
			cmd := exec.Command(bin)
			cmd.Env = []string{peerEnv + "=" + sv.sock}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tt.uid, Gid: tt.gid, Groups: tt.groups}}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("client as %d:%d: %v %s", tt.uid, tt.gid, err, out)
			}
			var status int
			fmt.Sscanf(string(out), "%d", &status)
			stored := src.stored()
			if status != tt.status || !strings.Contains(string(out), tt.refusal) {
				t.Fatalf("as %d:%d: %s; want %d %s", tt.uid, tt.gid, out, tt.status, tt.refusal)
			}
			switch {
			case status == 201 && (len(stored) != before+1 || stored[len(stored)-1].RecordedBy != tt.author):
				t.Errorf("after 201: %d records, last %+v; want one more, recorded by %s", len(stored), stored[len(stored)-1], tt.author)
			case status != 201 && len(stored) != before:
				t.Errorf("refused, yet %d records stored", len(stored)-before)
			}
		})
	}
	// The test's own process (root) over the socket, and over TCP.
	if status, body := sv.do(t, req{sock: true, method: "POST", path: "/v1/consent", body: goodConsent, hdr: jsonType}); status != 201 {
		t.Errorf("root over the socket = %d %s", status, body)
	}
	if status, body := sv.do(t, req{method: "POST", path: "/v1/consent", body: goodConsent, hdr: jsonType}); status != 403 {
		t.Errorf("root over TCP = %d %s, want 403", status, body)
	}
	if got := src.stored(); got[len(got)-1].RecordedBy != "root" {
		t.Errorf("root's consent recorded by %q", got[len(got)-1].RecordedBy)
	}
}
