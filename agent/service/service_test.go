package service

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/packaging"
)

// The unit the binary writes for the packaged binary and config is the
// packaged file, byte for byte: one source.
func TestSystemdUnitIsThePackagedFile(t *testing.T) {
	got, err := renderSystemdUnit(packagedBin, packagedConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != packaging.SystemdUnit {
		t.Fatalf("rendered unit differs from packaging/leadport-agent.service:\n%s", got)
	}
	file, err := os.ReadFile("../../packaging/leadport-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != packaging.SystemdUnit {
		t.Fatal("packaging.SystemdUnit is not packaging/leadport-agent.service")
	}
	if err := templateSafe(got); err != nil {
		t.Fatal(err)
	}
}

// unitSettings returns Key=Value settings of a unit, by key, in order.
func unitSettings(unit string) map[string][]string {
	m := map[string][]string{}
	for _, l := range strings.Split(unit, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if ok {
			m[k] = append(m[k], v)
		}
	}
	return m
}

func TestSystemdUnitHardening(t *testing.T) {
	s := unitSettings(packaging.SystemdUnit)
	want := map[string]string{
		"ExecStart":                 "/usr/bin/leadport-agent run --config /etc/leadport-agent/agent.yaml",
		"Restart":                   "always",
		"RestartSec":                "1",
		"StartLimitIntervalSec":     "0",
		"User":                      "leadport-agent",
		"Group":                     "leadport-agent",
		"NoNewPrivileges":           "yes",
		"ProtectSystem":             "strict",
		"ReadWritePaths":            "/var/lib/leadport-agent",
		"StateDirectory":            "leadport-agent",
		"StateDirectoryMode":        "0750",
		"RuntimeDirectory":          "leadport-agent",
		"RuntimeDirectoryMode":      "0750",
		"PrivateTmp":                "yes",
		"ProtectHome":               "yes",
		"CapabilityBoundingSet":     "CAP_NET_BIND_SERVICE",
		"AmbientCapabilities":       "CAP_NET_BIND_SERVICE",
		"ProtectKernelTunables":     "yes",
		"ProtectKernelModules":      "yes",
		"ProtectControlGroups":      "yes",
		"RestrictAddressFamilies":   "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"RestrictNamespaces":        "yes",
		"LockPersonality":           "yes",
		"MemoryDenyWriteExecute":    "yes",
		"SystemCallArchitectures":   "native",
		"SystemCallErrorNumber":     "EPERM",
		"UMask":                     "0027",
		"PrivateDevices":            "yes",
		"ProtectClock":              "yes",
		"ProtectHostname":           "yes",
		"ProtectKernelLogs":         "yes",
		"RestrictSUIDSGID":          "yes",
		"RestrictRealtime":          "yes",
		"PrivateMounts":             "yes",
		"ProtectProc":               "invisible",
		"WantedBy":                  "multi-user.target",
		"After":                     "network-online.target",
		"Wants":                     "network-online.target",
		"Type":                      "exec",
		"WorkingDirectory":          "/var/lib/leadport-agent",
		"TimeoutStopSec":            "15",
		"RemoveIPC":                 "yes",
		"KeyringMode":               "private",
		"DevicePolicy":              "closed",
		"Description":               "Leadport edge agent (SIP policy, usage metering, sync)",
		"Documentation":             "https://github.com/leadport/leadport-agent",
		"StartLimitBurst":           "",
		"ProcSubset":                "", // would hide /proc/meminfo, /proc/stat from gopsutil
		"PrivateUsers":              "", // would void CAP_NET_BIND_SERVICE
		"PrivateNetwork":            "",
		"IPAddressDeny":             "",
		"DynamicUser":               "",
		"RestrictFileSystems":       "",
		"SocketBindDeny":            "",
		"ConditionFileIsExecutable": "",
	}
	for k, v := range want {
		got := s[k]
		if v == "" {
			if len(got) != 0 {
				t.Errorf("%s=%v: want it unset", k, got)
			}
			continue
		}
		if len(got) != 1 || got[0] != v {
			t.Errorf("%s=%v, want %q", k, got, v)
		}
	}
	if f := s["SystemCallFilter"]; len(f) != 2 || f[0] != "@system-service" || f[1] != "~@privileged @resources" {
		t.Errorf("SystemCallFilter=%q", f)
	}
}

// systemdAnalyze runs systemd-analyze. A machine without it skips, unless
// LEADPORT_E2E=1 (make test, after scripts/setup.sh installed it), where
// its absence fails.
func systemdAnalyze(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("LEADPORT_E2E") == "1" {
			t.Fatal("no systemd-analyze (Debian's systemd; scripts/setup.sh installs it)")
		}
		t.Skip("no systemd-analyze here")
	}
	cmd := exec.Command("systemd-analyze", args...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// writeUnit writes a rendered unit as leadport-agent.service in a new
// directory (verify wants the unit's name) with a real executable.
func writeUnit(t *testing.T, exe, cfg string, extraRW []string) string {
	t.Helper()
	unit, err := renderSystemdUnit(exe, cfg, extraRW)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "leadport-agent.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeAgent is an executable with an awkward name: spaces, %, $.
func fakeAgent(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), `lead port 50% $HOME`)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "leadport-agent")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

func TestSystemdUnitVerifies(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{
		"test binary":            writeUnit(t, exe, packagedConfig, nil),
		"awkward names, extraRW": writeUnit(t, fakeAgent(t), `/etc/lead port/a%b"$x\\y.yaml`, []string{"/srv/leadport data", "/etc/leadport-keys", "/srv/50%"}),
	} {
		out, err := systemdAnalyze(t, "verify", p)
		if err != nil || strings.Contains(out, "leadport-agent.service:") {
			t.Errorf("%s: systemd-analyze verify: %v\n%s", name, err, out)
		}
	}
}

// TestSystemdSecurityExposure logs systemd's rating of the unit's sandbox
// and holds it at "OK" (below 2.0, on a scale where 10 is unsandboxed).
func TestSystemdSecurityExposure(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := systemdAnalyze(t, "security", "--offline=yes", writeUnit(t, exe, packagedConfig, nil))
	m := regexp.MustCompile(`Overall exposure level for leadport-agent\.service: ([0-9.]+)`).FindStringSubmatch(out)
	if err != nil || m == nil {
		// systemd 250 and later have --offline; Debian 12 has 252.
		if os.Getenv("LEADPORT_E2E") == "1" {
			t.Fatalf("systemd-analyze security --offline=yes: %v\n%s", err, out)
		}
		t.Skipf("systemd-analyze security --offline=yes does not work here: %v\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score >= 2.0 {
		t.Errorf("exposure %.1f, want below 2.0:\n%s", score, out)
	}
}

func TestSystemdQuote(t *testing.T) {
	tests := []struct {
		in        string
		kind      int
		want, err string
	}{
		{in: "/usr/bin/leadport-agent", kind: sdExe, want: "/usr/bin/leadport-agent"},
		{in: "--config", kind: sdArg, want: "--config"},
		{in: "/opt/lead port/agent", kind: sdExe, want: `"/opt/lead port/agent"`},
		{in: "/opt/a%n/$x", kind: sdExe, want: `"/opt/a%%n/$x"`},
		{in: `/opt/a"b`, kind: sdExe, err: "cannot"},
		{in: `/opt/a\b`, kind: sdExe, err: "cannot"},
		{in: `/a"b\c`, kind: sdArg, want: `"/a\"b\\c"`},
		{in: "/a%n", kind: sdArg, want: `"/a%%n"`},
		{in: "/a$HOME", kind: sdArg, want: `"/a$$HOME"`},
		{in: "/a$HOME %n", kind: sdPath, want: `"/a$HOME %%n"`},
		{in: "", kind: sdArg, err: "cannot"},
		{in: "/a\nb", kind: sdPath, err: "cannot"},
	}
	for _, tc := range tests {
		got, err := systemdQuote(tc.in, tc.kind)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestRenderSystemdUnit(t *testing.T) {
	got, err := renderSystemdUnit("/opt/lead port/leadport-agent", "/etc/lp/a%b.yaml", []string{"/srv/leadport data", "/etc/lp-keys"})
	if err != nil {
		t.Fatal(err)
	}
	s := unitSettings(got)
	if e := s["ExecStart"]; len(e) != 1 || e[0] != `"/opt/lead port/leadport-agent" run --config "/etc/lp/a%%b.yaml"` {
		t.Errorf("ExecStart=%q", e)
	}
	if rw := s["ReadWritePaths"]; len(rw) != 1 || rw[0] != `/var/lib/leadport-agent "/srv/leadport data" /etc/lp-keys` {
		t.Errorf("ReadWritePaths=%q", rw)
	}
	// Everything else is the packaged unit.
	strip := func(u string) string {
		return regexp.MustCompile(`(?m)^(ExecStart|ReadWritePaths)=.*$`).ReplaceAllString(u, "")
	}
	if strip(got) != strip(packaging.SystemdUnit) {
		t.Error("rendering changed more than ExecStart and ReadWritePaths")
	}
	if _, err := renderSystemdUnit("/opt/{{x}}/agent", packagedConfig, nil); err == nil {
		t.Error(`a path with "{{" was accepted`)
	}
}

// sh runs a shell script, or skips without sh.
func sh(t *testing.T, script string, env ...string) string {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	return string(out)
}

// procdHarness sources an OpenWrt init script with procd's functions
// replaced by ones that print what they are given, then runs start_service.
const procdHarness = `
procd_open_instance() { echo open; }
procd_close_instance() { echo close; }
procd_set_param() { printf 'param'; for a in "$@"; do printf ' <%s>' "$a"; done; echo; }
mkdir() { echo "mkdir $*"; }
chown() { echo "chown $*"; }
chmod() { echo "chmod $*"; }
. "$SCRIPT"
echo "USE_PROCD=$USE_PROCD START=$START STOP=$STOP"
start_service
`

func TestProcdInit(t *testing.T) {
	got, err := renderProcdInit(packagedBin, packagedConfig)
	if err != nil {
		t.Fatal(err)
	}
	if got != packaging.ProcdInit {
		t.Fatalf("rendered procd script differs from packaging/openwrt/leadport-agent.init:\n%s", got)
	}
	sh(t, "sh -n ../../packaging/openwrt/leadport-agent.init")

	// With awkward paths, and a config naming its data_dir.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "lead port's", "agent.yaml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("# x\ndata_dir: \"/etc/leadport-agent/data\"  # on flash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := "/opt/lead port/leadport-agent"
	script, err := renderProcdInit(exe, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "leadport-agent.init")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out := sh(t, procdHarness, "SCRIPT="+p)
	for _, want := range []string{
		"USE_PROCD=1 START=50 STOP=02", // the symlinks kardianos makes: S50, K02
		"param <command> <" + exe + "> <run> <--config> <" + cfg + ">",
		"param <user> <leadport-agent>",
		"param <group> <leadport-agent>",
		"param <respawn> <3600> <1> <0>",
		"param <no_new_privs> <1>",
		"mkdir -p /etc/leadport-agent/data",
		"chown leadport-agent:leadport-agent /etc/leadport-agent/data",
		"chmod 0750 /etc/leadport-agent/data",
		"mkdir -p /var/run/leadport-agent",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("start_service: missing %q in\n%s", want, out)
		}
	}
}

func TestOpenRCInit(t *testing.T) {
	got, err := renderOpenRCInit(packagedBin, packagedConfig)
	if err != nil {
		t.Fatal(err)
	}
	if got != packaging.OpenRCInit {
		t.Fatalf("rendered OpenRC script differs from packaging/openrc/leadport-agent.initd:\n%s", got)
	}
	sh(t, "sh -n ../../packaging/openrc/leadport-agent.initd")

	cfg := `/etc/lead port/a"$x.yaml`
	script, err := renderOpenRCInit("/opt/lead port/leadport-agent", cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "leadport-agent.initd")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// OpenRC evaluates command_args; the config path must come out whole.
	out := sh(t, `. "$SCRIPT"; echo "command=$command user=$command_user respawn=$respawn_delay/$respawn_max"; eval "set -- $command_args"; for a in "$@"; do echo "arg <$a>"; done`, "SCRIPT="+p)
	for _, want := range []string{
		"command=/opt/lead port/leadport-agent user=leadport-agent:leadport-agent respawn=1/0",
		"arg <run>", "arg <--config>", "arg <" + cfg + ">",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if _, err := renderOpenRCInit("/opt/it's/agent", packagedConfig); err == nil {
		t.Error("a path with a single quote was accepted")
	}
}

func TestUserAddCommands(t *testing.T) {
	has := func(names ...string) func(string) bool {
		return func(n string) bool {
			for _, x := range names {
				if x == n {
					return true
				}
			}
			return false
		}
	}
	tests := []struct {
		name string
		have func(string) bool
		want [][]string
	}{
		{"debian", has("useradd", "adduser", "/usr/sbin/nologin"), [][]string{{"useradd", "--system", "--user-group", "--home-dir", "/var/lib/leadport-agent", "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "Leadport edge agent", "leadport-agent"}}},
		{"rhel", has("useradd", "/sbin/nologin"), [][]string{{"useradd", "--system", "--user-group", "--home-dir", "/var/lib/leadport-agent", "--no-create-home", "--shell", "/sbin/nologin", "--comment", "Leadport edge agent", "leadport-agent"}}},
		{"alpine", has("adduser", "addgroup", "/sbin/nologin"), [][]string{
			{"addgroup", "-S", "leadport-agent"},
			{"adduser", "-S", "-D", "-H", "-h", "/var/lib/leadport-agent", "-s", "/sbin/nologin", "-G", "leadport-agent", "-g", "Leadport edge agent", "leadport-agent"},
		}},
		{"openwrt", has("/lib/functions.sh"), [][]string{{"sh", "-c", openWrtAddUser}}},
		{"nothing", has(), nil},
	}
	for _, tc := range tests {
		got := userAddCommands(tc.have)
		if strings.Join(flat(got), "|") != strings.Join(flat(tc.want), "|") || len(got) != len(tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func flat(argvs [][]string) []string {
	var s []string
	for _, a := range argvs {
		s = append(s, strings.Join(a, " "))
	}
	return s
}

// The OpenWrt user creation against copies of OpenWrt's files and a
// stand-in for base-files' helpers.
func TestOpenWrtAddUser(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	passwd := write("passwd", "root:x:0:0:root:/root:/bin/ash\nntp:x:123:123:ntp:/var/run/ntp:/bin/false\nx:x:200:200:x:/:/bin/false\n")
	group := write("group", "root:x:0:\nntp:x:123:ntp\nx:x:200:\nweird:x:201:\n")
	funcs := write("functions.sh", `
group_exists() { grep -qs "^$1:" "$GROUP"; }
user_exists() { grep -qs "^$1:" "$PASSWD"; }
group_add() { echo "$1:x:$2:" >> "$GROUP"; }
user_add() { echo "$1:x:$2:$3:$4:$5:$6" >> "$PASSWD"; }
`)
	script := strings.NewReplacer("/lib/functions.sh", funcs, "/etc/passwd", passwd, "/etc/group", group).Replace(openWrtAddUser)
	for i := 0; i < 2; i++ { // twice: the second run changes nothing
		sh(t, script, "PASSWD="+passwd, "GROUP="+group)
	}
	p, _ := os.ReadFile(passwd)
	g, _ := os.ReadFile(group)
	if !strings.HasSuffix(string(p), "\nleadport-agent:x:202:202:Leadport edge agent:/var/run/leadport-agent:/bin/false\n") || strings.Count(string(p), "\nleadport-agent:") != 1 {
		t.Errorf("passwd:\n%s", p)
	}
	if !strings.HasSuffix(string(g), "\nleadport-agent:x:202:\n") || strings.Count(string(g), "\nleadport-agent:") != 1 {
		t.Errorf("group:\n%s", g)
	}
}

func TestCheckSystemdPaths(t *testing.T) {
	tests := []struct {
		exe, cfg string
		bad      string
	}{
		{"/usr/bin/leadport-agent", "/etc/leadport-agent/agent.yaml", ""},
		{"/usr/local/bin/leadport-agent", "/opt/lp/agent.yaml", ""},
		{"/home/tech/leadport-agent", "/etc/leadport-agent/agent.yaml", "under /home"},
		{"/root/leadport-agent", "/etc/leadport-agent/agent.yaml", "under /root"},
		{"/tmp/leadport-agent", "/etc/leadport-agent/agent.yaml", "under /tmp"},
		{"/usr/bin/leadport-agent", "/home/tech/agent.yaml", "the config is /home/tech/agent.yaml"},
		{"/usr/bin/leadport-agent", "/var/tmp/agent.yaml", "under /var/tmp"},
		{"/homer/leadport-agent", "/etc/leadport-agent/agent.yaml", ""},
	}
	for _, tc := range tests {
		err := checkSystemdPaths(tc.exe, tc.cfg)
		if tc.bad == "" && err != nil || tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)) {
			t.Errorf("%s, %s: %v; want %q", tc.exe, tc.cfg, err, tc.bad)
		}
	}
}

func TestAgentDirs(t *testing.T) {
	cfg, err := config.Parse("agent.yaml", []byte("data_dir: /srv/leadport\nstore:\n  key_file: /etc/leadport-keys/device.key\napi:\n  socket: /run/leadport-agent/api.sock\n"))
	if err != nil {
		t.Fatal(err)
	}
	dirs, warns := agentDirs(cfg, initSystemd)
	if strings.Join(dirs, " ") != "/srv/leadport /etc/leadport-keys" {
		t.Errorf("dirs %q", dirs)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "outside /var/lib/leadport-agent") {
		t.Errorf("warnings %q", warns)
	}
	cfg, err = config.Parse("agent.yaml", []byte("data_dir: /var/lib/leadport-agent\napi:\n  socket: /run/other/api.sock\n"))
	if err != nil {
		t.Fatal(err)
	}
	dirs, warns = agentDirs(cfg, initSystemd)
	if strings.Join(dirs, " ") != "/var/lib/leadport-agent /run/other" || len(warns) != 1 || !strings.Contains(warns[0], "only /run/leadport-agent is made at every boot") {
		t.Errorf("dirs %q, warnings %q", dirs, warns)
	}
}

// TestInstallSystemdE2E installs and uninstalls the service on this machine
// through kardianos' systemd backend, with a stand-in systemctl that only
// records its calls: the unit file, the user, the data directory. It needs
// root and LEADPORT_E2E=1, and leaves the machine as it found it.
func TestInstallSystemdE2E(t *testing.T) {
	if os.Getenv("LEADPORT_E2E") != "1" || testing.Short() {
		t.Skip("LEADPORT_E2E=1 (and not -short) installs the service on this machine")
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on Linux")
	}
	// A unit there is a real installation (or this test's leftover, which
	// `leadport-agent uninstall` removes): never touched, and the test fails
	// rather than pass without having run.
	for _, p := range []string{etcUnit, initScript} {
		if exists(p) {
			t.Fatalf("%s is installed: not touching a real installation (`leadport-agent uninstall` removes it)", p)
		}
	}
	if _, err := os.Stat("/etc/systemd/system"); err != nil {
		t.Fatalf("no /etc/systemd/system (Debian's systemd; scripts/setup.sh installs it): %v", err)
	}
	// The data directory may hold a `make run` as root's store: kept.
	setAside(t, stateDir)
	os.RemoveAll("/etc/leadport-agent-e2e") // only ever this test's
	_, userErr := user.Lookup(serviceUser)
	userBefore := userErr == nil

	// Stand-in systemctl on PATH.
	bin := t.TempDir()
	calls := filepath.Join(bin, "calls")
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\necho \"$*\" >> "+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	cfgDir := "/etc/leadport-agent-e2e"
	cfg := cfgDir + "/agent.yaml"
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("data_dir: /var/lib/leadport-agent\napi:\n  socket: /run/leadport-agent/api.sock\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oldInit, oldExe := forceInit, executable
	forceInit = initSystemd
	executable = func() (string, error) { return "/usr/local/bin/leadport-agent", nil }
	t.Cleanup(func() {
		forceInit, executable = oldInit, oldExe
		os.Remove(etcUnit)
		os.RemoveAll(cfgDir)
		os.RemoveAll(stateDir)
		if !userBefore {
			exec.Command("userdel", serviceUser).Run()
			exec.Command("groupdel", serviceUser).Run()
		}
	})

	// cmd does what `leadport-agent ACTION [--config CONFIG]` does once
	// its flags are parsed: exit 1 on an error, which stderr then ends
	// with.
	cmd := func(action string, args ...string) (string, string, int) {
		var stdout, stderr bytes.Buffer
		var err error
		switch action {
		case "install":
			if len(args) != 2 || args[0] != "--config" {
				t.Fatalf("install %q: want --config FILE", args)
			}
			err = Install(args[1], &stdout, &stderr)
		case "uninstall":
			err = Uninstall(&stdout)
		default:
			err = Control(action, &stdout)
		}
		if err != nil {
			fmt.Fprintln(&stderr, err)
			return stdout.String(), stderr.String(), 1
		}
		return stdout.String(), stderr.String(), 0
	}
	readCalls := func() string {
		b, _ := os.ReadFile(calls)
		os.Remove(calls)
		return string(b)
	}

	out, errOut, code := cmd("install", "--config", cfg)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("install:\n%s%s", out, errOut)
	want, _ := renderSystemdUnit("/usr/local/bin/leadport-agent", cfg, nil)
	if got, err := os.ReadFile(etcUnit); err != nil || string(got) != want {
		t.Fatalf("%s: %v\n%s", etcUnit, err, got)
	}
	if c := readCalls(); !strings.Contains(c, "enable leadport-agent.service\n") || !strings.Contains(c, "daemon-reload\n") {
		t.Errorf("systemctl calls:\n%s", c)
	}
	u, err := user.Lookup(serviceUser)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(stateDir)
	if err != nil || fi.Mode().Perm() != 0o750 || !fi.IsDir() {
		t.Fatalf("%s: %v %v", stateDir, err, fi)
	}
	if owner := statOwner(t, stateDir); owner != u.Uid+":"+u.Gid {
		t.Errorf("%s owned by %s, want %s:%s", stateDir, owner, u.Uid, u.Gid)
	}
	// The config was 0600 root: now readable by the service's group.
	if fi, _ := os.Stat(cfg); fi.Mode().Perm() != 0o640 || statOwner(t, cfg) != "0:"+u.Gid {
		t.Errorf("%s: %v %s", cfg, fi.Mode(), statOwner(t, cfg))
	}

	// Again: the same unit is there, so install only enables it.
	if out, errOut, code := cmd("install", "--config", cfg); code != 0 {
		t.Fatalf("second install: exit %d\n%s%s", code, out, errOut)
	}
	if c := readCalls(); !strings.Contains(c, "enable leadport-agent.service\n") {
		t.Errorf("systemctl calls:\n%s", c)
	}
	// Another config while installed: refused.
	other := cfgDir + "/other.yaml"
	os.WriteFile(other, []byte("data_dir: /var/lib/leadport-agent\napi:\n  socket: /run/leadport-agent/api.sock\n"), 0o644)
	if _, errOut, code := cmd("install", "--config", other); code != 1 || !strings.Contains(errOut, "uninstall` first") {
		t.Errorf("install over another: exit %d, %s", code, errOut)
	}
	readCalls()

	// Data the agent wrote, then uninstall: unit gone, data kept.
	if err := os.WriteFile(stateDir+"/agent.db", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = cmd("uninstall")
	if code != 0 {
		t.Fatalf("uninstall: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(etcUnit); err == nil {
		t.Error("uninstall left the unit")
	}
	if _, err := os.Stat(stateDir + "/agent.db"); err != nil {
		t.Errorf("uninstall did not keep the data: %v", err)
	}
	if c := readCalls(); !strings.Contains(c, "stop leadport-agent.service\n") || !strings.Contains(c, "disable leadport-agent.service\n") {
		t.Errorf("systemctl calls:\n%s", c)
	}
	if _, errOut, code := cmd("uninstall"); code != 1 || !strings.Contains(errOut, "not installed") {
		t.Errorf("second uninstall: exit %d, %s", code, errOut)
	}
	readCalls()
	// A package's unit that runs this binary and config: install only
	// enables it, uninstall only disables it, the file stays.
	vendor := vendorUnits[0]
	if _, err := os.Lstat(vendor); err == nil {
		t.Logf("%s exists: vendor unit case not tested", vendor)
	} else if err := os.WriteFile(vendor, []byte(want), 0o644); err == nil {
		t.Cleanup(func() { os.Remove(vendor) })
		if out, errOut, code := cmd("install", "--config", cfg); code != 0 || !strings.Contains(out, "installed (linux-systemd): "+vendor) {
			t.Errorf("install with the package's unit: exit %d\n%s%s", code, out, errOut)
		}
		if _, err := os.Stat(etcUnit); err == nil {
			t.Errorf("install wrote %s over the package's unit", etcUnit)
		}
		if c := readCalls(); c != "daemon-reload\nenable leadport-agent.service\n" {
			t.Errorf("systemctl calls: %q", c)
		}
		if out, errOut, code := cmd("uninstall"); code != 0 || !strings.Contains(out, "disabled") {
			t.Errorf("uninstall with the package's unit: exit %d\n%s%s", code, out, errOut)
		}
		if c := readCalls(); c != "stop leadport-agent.service\ndisable leadport-agent.service\n" {
			t.Errorf("systemctl calls: %q", c)
		}
		if _, err := os.Stat(vendor); err != nil {
			t.Errorf("uninstall removed the package's unit: %v", err)
		}
	}

	// start and stop go to systemctl.
	if _, errOut, code := cmd("restart"); code != 0 {
		t.Errorf("restart: %d %s", code, errOut)
	}
	if c := readCalls(); c != "restart leadport-agent.service\n" {
		t.Errorf("systemctl calls: %q", c)
	}
}

// statOwner is "uid:gid" of a file, from stat(1).
func statOwner(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("stat", "-c", "%u:%g", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// TestPackagesDeb runs scripts/test-packages.sh: the .deb installed with
// dpkg, checked, removed and purged. Root on Debian with LEADPORT_E2E=1.
func TestPackagesDeb(t *testing.T) {
	if os.Getenv("LEADPORT_E2E") != "1" || testing.Short() {
		t.Skip("LEADPORT_E2E=1 (and not -short) installs the .deb on this machine")
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "systemd-analyze", "runuser", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("no %s (scripts/setup.sh installs what this test needs on Debian)", tool)
		}
	}
	cmd := exec.Command("scripts/test-packages.sh")
	cmd.Dir = "../.."
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("scripts/test-packages.sh (%s):\n%s", time.Since(start).Round(time.Second), out)
	if err != nil {
		t.Fatal(err)
	}
}

// Context is what `run` can stop on; off Windows, signals only.
func TestServiceContext(t *testing.T) {
	ctx, stop := Context(context.Background())
	select {
	case <-ctx.Done():
		t.Fatal("done before stop")
	default:
	}
	stop()
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
		t.Fatal("stop did not end the context")
	}
}
