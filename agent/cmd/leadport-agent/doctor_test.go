package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The doctor through main's dispatch: the text report with its header and
// the error line, --json, the exit codes, $LEADPORT_CONFIG. The checks
// themselves are package doctor's tests.
func TestDoctorCLI(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(bad, []byte("data_dir: "+t.TempDir()+"\nsip:\n  mode: telepathy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doctor := func(args ...string) (code int, stdout, stderr string) {
		var out, errOut bytes.Buffer
		code = run(append([]string{"doctor"}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}

	code, out, errOut := doctor("--config", bad)
	if code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	for _, w := range []string{
		`^leadport-agent doctor \(\S+, \w+/\w+, host .*\)\n`,
		`(?m)^FAIL  config        ` + regexp.QuoteMeta(bad) + `: 1 problem$`,
		`(?m)^ {20}line 3: sip\.mode: bad mode "telepathy"`,
		`(?m)^ {20}fix: correct the file`,
		`(?m)^SKIP  broker        needs a valid config$`,
		`(?m)^(OK|WARN)  +clock `,
		`\n\n1 FAIL(, \d+ (WARN|OK))*, 7 SKIP\n$`,
	} {
		if !regexp.MustCompile(w).MatchString(out) {
			t.Errorf("stdout does not match %s", w)
		}
	}
	if errOut != "leadport-agent doctor: 1 check failed\n" {
		t.Errorf("stderr = %q, want the count of failed checks", errOut)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s", out)
	}

	code, out, errOut = doctor("--json", "--config", bad)
	var rep struct {
		Config string         `json:"config"`
		OK     bool           `json:"ok"`
		Counts map[string]int `json:"counts"`
		Checks []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if code != 1 || rep.OK || rep.Config != bad || rep.Counts["FAIL"] != 1 || len(rep.Checks) == 0 ||
		rep.Checks[0].Name != "config" || rep.Checks[0].Status != "FAIL" {
		t.Errorf("--json: exit %d, %+v; want exit 1, config %s FAIL", code, rep, bad)
	}
	if strings.Contains(out, "fix:") || strings.Contains(out, "leadport-agent doctor (") {
		t.Errorf("JSON output carries text-report lines:\n%s", out)
	}
	if errOut != "leadport-agent doctor: 1 check failed\n" {
		t.Errorf("--json: stderr = %q", errOut)
	}

	t.Setenv("LEADPORT_CONFIG", filepath.Join(t.TempDir(), "missing.yaml"))
	code, out, _ = doctor()
	if code != 1 || !regexp.MustCompile(`(?m)^ {20}fix: \$LEADPORT_CONFIG names a missing file`).MatchString(out) {
		t.Errorf("$LEADPORT_CONFIG naming a missing file: exit %d\n%s", code, out)
	}

	if code, _, errOut := doctor("extra"); code != 2 || !strings.Contains(errOut, "usage: leadport-agent doctor [--config FILE] [--json]") {
		t.Errorf("doctor extra: exit %d, stderr %q; want 2 and the usage", code, errOut)
	}
}

func TestDoctorConfigFile(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(existing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")
	tests := []struct {
		flag, env, def     string
		wantPath, wantFrom string
	}{
		{"a.yaml", "b.yaml", existing, "a.yaml", doctorFromFlag},
		{"", "b.yaml", existing, "b.yaml", doctorFromEnv},
		{"", "", existing, existing, doctorFromDefault},
		{"", "", missing, "", doctorFromNone},
	}
	for i, tt := range tests {
		path, from := doctorConfigFile(tt.flag, tt.env, tt.def)
		if path != tt.wantPath || from != tt.wantFrom {
			t.Errorf("%d: configFile(%q, %q, %q) = %q, %q; want %q, %q", i, tt.flag, tt.env, tt.def, path, from, tt.wantPath, tt.wantFrom)
		}
	}
}
