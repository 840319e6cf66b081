package main

// The system service: `leadport-agent install [--config F]`, `uninstall`,
// `start`, `stop`, `restart`, through github.com/kardianos/service.
//
// On Linux the service definitions are ours, not kardianos' defaults: the
// systemd unit, the OpenWrt procd script and the OpenRC script in
// packaging/ are built into the binary (package packaging), and `install`
// hands kardianos exactly those files with only the binary and config lines
// changed, so a package install and `leadport-agent install` run the agent
// the same way (as the user leadport-agent, restarted one second after any
// exit). Other Linux init systems (SysV, upstart), launchd and Windows get
// kardianos' own service definitions and run the agent as root/LocalSystem.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/kardianos/service"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/packaging"
)

const (
	svcName         = "leadport-agent"
	svcUser         = config.ServiceUser // user and group the Linux service runs as
	svcDesc         = "Leadport edge agent (SIP policy, usage metering, sync)"
	svcPackagedBin  = "/usr/bin/leadport-agent"
	svcPackagedConf = defaultConfigPath
	svcStateDir     = "/var/lib/leadport-agent" // StateDirectory= of the unit
	svcRuntimeDir   = "/run/leadport-agent"     // RuntimeDirectory= of the unit

	svcEtcUnit    = "/etc/systemd/system/" + svcName + ".service"
	svcInitScript = "/etc/init.d/" + svcName
)

// svcVendorUnits are where the deb and rpm packages put the unit.
var svcVendorUnits = []string{
	"/usr/lib/systemd/system/" + svcName + ".service",
	"/lib/systemd/system/" + svcName + ".service",
}

// Init systems, as kardianos names them.
const (
	svcSystemd = "linux-systemd"
	svcProcd   = "linux-procd"
	svcOpenRC  = "linux-openrc"
)

// Test hooks.
var (
	// svcForceInit, when set, is the kardianos system to use instead of
	// detecting one.
	svcForceInit string
	// svcAllSystems is kardianos' registry before any ChooseSystem.
	svcAllSystems = service.AvailableSystems()
	svcGeteuid    = os.Geteuid
	svcExecutable = func() (string, error) {
		p, err := os.Executable()
		if err != nil {
			return "", err
		}
		return filepath.EvalSymlinks(p)
	}
	// svcRun runs an external command (systemctl, useradd, ...).
	svcRun = func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			msg := strings.TrimSpace(string(out))
			if msg != "" {
				return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
			}
			return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return nil
	}
)

// svcArgs is a parsed service command line.
type svcArgs struct {
	action string // install, uninstall, start, stop, restart
	config string // install only: absolute path of the configuration file
}

// svcDefaultConfig is the configuration file the service runs with when
// install is given none.
func svcDefaultConfig() string {
	if runtime.GOOS == "windows" {
		dir := os.Getenv("ProgramData")
		if dir == "" {
			dir = `C:\ProgramData`
		}
		return filepath.Join(dir, svcName, "agent.yaml")
	}
	return svcPackagedConf
}

// parseSvcArgs reads the arguments of one service action.
func parseSvcArgs(action string, args []string, stderr io.Writer) (svcArgs, error) {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var path *string
	if action == "install" {
		path = fs.String("config", svcDefaultConfig(), "configuration file the service runs with")
	}
	if err := fs.Parse(args); err != nil {
		return svcArgs{}, err
	}
	if fs.NArg() != 0 {
		return svcArgs{}, errUsage
	}
	sa := svcArgs{action: action}
	if path != nil {
		if strings.TrimSpace(*path) == "" {
			return svcArgs{}, fmt.Errorf("--config: empty file name")
		}
		abs, err := filepath.Abs(*path)
		if err != nil {
			return svcArgs{}, fmt.Errorf("--config: %w", err)
		}
		sa.config = abs
	}
	return sa, nil
}

// serviceCmd manages the system service.
func serviceCmd(action string) func(args []string, stdout, stderr io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		sa, err := parseSvcArgs(action, args, stderr)
		if err != nil {
			return err
		}
		if runtime.GOOS != "windows" && svcGeteuid() != 0 {
			return fmt.Errorf("managing the system service needs root: sudo leadport-agent %s", action)
		}
		initName, err := svcChooseInit()
		if err != nil {
			return err
		}
		switch action {
		case "install":
			return svcInstall(sa, initName, stdout, stderr)
		case "uninstall":
			return svcUninstall(initName, stdout)
		default:
			s, err := newSvc(initName, nil)
			if err != nil {
				return err
			}
			if err := service.Control(s, action); err != nil {
				return fmt.Errorf("%s (%s): %w", action, initName, err)
			}
			fmt.Fprintf(stdout, "%s: %s (%s)\n", svcName, svcPastTense(action), initName)
			return nil
		}
	}
}

func svcPastTense(action string) string {
	switch action {
	case "stop":
		return "stopped"
	case "restart":
		return "restarted"
	default:
		return "started"
	}
}

// svcForcedSystem makes kardianos use one init system whatever it detects.
type svcForcedSystem struct{ service.System }

func (svcForcedSystem) Detect() bool { return true }

// svcChooseInit picks the init system and tells kardianos. On OpenWrt it is
// procd: kardianos would otherwise take /etc/init.d/rcS for rcS first.
func svcChooseInit() (string, error) {
	want := svcForceInit
	if want == "" && runtime.GOOS == "linux" && svcExists("/etc/openwrt_release") {
		want = svcProcd
	}
	if want == "" {
		service.ChooseSystem(svcAllSystems...)
		s := service.ChosenSystem()
		if s == nil {
			return "", errors.New("no service manager found on this system")
		}
		return s.String(), nil
	}
	for _, s := range svcAllSystems {
		if s.String() == want {
			service.ChooseSystem(svcForcedSystem{s})
			return want, nil
		}
	}
	return "", fmt.Errorf("service manager %s is not available in this build", want)
}

// svcOurInit reports whether the service definition for initName comes from
// packaging/ (and the agent runs as svcUser).
func svcOurInit(initName string) bool {
	switch initName {
	case svcSystemd, svcProcd, svcOpenRC:
		return true
	}
	return false
}

// svcNoop satisfies kardianos' Interface for install and control.
type svcNoop struct{}

func (svcNoop) Start(service.Service) error { return nil }
func (svcNoop) Stop(service.Service) error  { return nil }

// svcSpec is what install needs to write a service definition.
type svcSpec struct {
	exe, config string
	// extraRW are directories outside svcStateDir and svcRuntimeDir that the agent
	// writes (data_dir, key file, socket elsewhere); systemd only.
	extraRW []string
}

// newSvc builds the kardianos service. spec is nil for actions that do
// not write a service definition.
func newSvc(initName string, spec *svcSpec) (service.Service, error) {
	c := &service.Config{
		Name:        svcName,
		DisplayName: "Leadport edge agent",
		Description: svcDesc,
		Option: service.KeyValue{
			// launchd: start at boot, restart on exit.
			"RunAtLoad": true,
			"KeepAlive": true,
			// Windows: restart a second after a failure.
			"OnFailure":              "restart",
			"OnFailureDelayDuration": "1s",
			"OnFailureResetPeriod":   60,
		},
	}
	if spec != nil {
		c.Executable = spec.exe
		c.Arguments = []string{"run", "--config", spec.config}
		switch initName {
		case svcSystemd:
			unit, err := renderSystemdUnit(spec.exe, spec.config, spec.extraRW)
			if err != nil {
				return nil, err
			}
			c.Option["SystemdScript"] = unit
		case svcProcd:
			script, err := renderProcdInit(spec.exe, spec.config)
			if err != nil {
				return nil, err
			}
			c.Option["SysvScript"] = script // kardianos' procd takes its script here
		case svcOpenRC:
			script, err := renderOpenRCInit(spec.exe, spec.config)
			if err != nil {
				return nil, err
			}
			c.Option["OpenRCScript"] = script
		}
	}
	return service.New(svcNoop{}, c)
}

// svcInstall installs and enables the service; it does not start it.
func svcInstall(sa svcArgs, initName string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(sa.config)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w\n(write one first: the packages install %s; packaging/leadport-agent.example.yaml documents every key)", err, svcPackagedConf)
		}
		return err
	}
	exe, err := svcExecutable()
	if err != nil {
		return fmt.Errorf("finding this binary: %w", err)
	}
	spec := &svcSpec{exe: exe, config: sa.config}
	runAs := "root"
	if runtime.GOOS == "windows" {
		runAs = "LocalSystem"
	}
	dataDir := cfg.DataDir
	var dirs []string
	if svcOurInit(initName) {
		runAs = svcUser
		if initName == svcSystemd {
			if err := svcCheckSystemdPaths(exe, sa.config); err != nil {
				return err
			}
		}
		var warns []string
		dirs, warns = svcAgentDirs(cfg, initName)
		for _, w := range warns {
			fmt.Fprintf(stderr, "warning: %s\n", w)
		}
		if initName == svcSystemd {
			for _, d := range dirs {
				if !svcUnder(d, svcStateDir) && !svcUnder(d, svcRuntimeDir) {
					spec.extraRW = append(spec.extraRW, d)
				}
			}
		}
	} else if runtime.GOOS == "windows" && !filepath.IsAbs(dataDir) {
		fmt.Fprintf(stderr, "warning: set data_dir in %s to an absolute path (for example C:\\ProgramData\\leadport-agent\\data): a Windows service starts in C:\\Windows\\System32\n", sa.config)
	}
	// Refuse a conflicting installation before changing anything.
	if _, err := svcInstallDefinition(nil, initName, spec); err != nil && !errors.Is(err, errSvcDryRun) {
		return err
	}
	if svcOurInit(initName) {
		uid, gid, err := svcEnsureUser()
		if err != nil {
			return err
		}
		for _, d := range dirs {
			warn, err := svcPrepareDir(d, uid, gid)
			if err != nil {
				return err
			}
			if warn != "" {
				fmt.Fprintf(stderr, "warning: %s\n", warn)
			}
		}
		if msg, err := svcShareConfig(sa.config, gid); err != nil {
			fmt.Fprintf(stderr, "warning: %v\n", err)
		} else if msg != "" {
			fmt.Fprintln(stdout, msg)
		}
	}

	s, err := newSvc(initName, spec)
	if err != nil {
		return err
	}
	where, err := svcInstallDefinition(s, initName, spec)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: installed (%s): %s, enabled at boot\n", svcName, initName, where)
	fmt.Fprintf(stdout, "  runs  %s run --config %s\n", exe, sa.config)
	fmt.Fprintf(stdout, "  as    %s; data in %s\n", runAs, dataDir)
	fmt.Fprintf(stdout, "start it with: leadport-agent start\n")
	return nil
}

// errSvcDryRun is what svcInstallDefinition returns, given no service,
// where it would have written or enabled the definition.
var errSvcDryRun = errors.New("dry run")

// svcInstallDefinition writes and enables the service definition, or only
// enables one a package installed, and returns where the definition is.
// With s nil it only checks: errSvcDryRun, or why it cannot install.
func svcInstallDefinition(s service.Service, initName string, spec *svcSpec) (string, error) {
	act := func(where string, f func() error) (string, error) {
		if s == nil {
			return where, errSvcDryRun
		}
		return where, f()
	}
	switch initName {
	case svcSystemd:
		want, err := renderSystemdUnit(spec.exe, spec.config, spec.extraRW)
		if err != nil {
			return "", err
		}
		if same, exists := svcSameContent(svcEtcUnit, want); exists {
			if !same {
				return "", fmt.Errorf("%s exists and runs another binary or config: run `leadport-agent uninstall` first", svcEtcUnit)
			}
			return act(svcEtcUnit, svcEnableSystemd)
		}
		for _, v := range svcVendorUnits {
			if same, _ := svcSameContent(v, want); same {
				return act(v, svcEnableSystemd)
			}
		}
		// Anything else: our unit in /etc/systemd/system (overriding a
		// packaged one that runs another binary or config).
		return act(svcEtcUnit, func() error { return s.Install() })
	case svcProcd, svcOpenRC:
		var want string
		var err error
		if initName == svcProcd {
			want, err = renderProcdInit(spec.exe, spec.config)
		} else {
			want, err = renderOpenRCInit(spec.exe, spec.config)
		}
		if err != nil {
			return "", err
		}
		if same, exists := svcSameContent(svcInitScript, want); exists {
			if !same {
				return "", fmt.Errorf("%s exists and runs another binary or config: remove the package or run `leadport-agent uninstall` first", svcInitScript)
			}
			if initName == svcProcd {
				return act(svcInitScript, func() error { return svcRun(svcInitScript, "enable") })
			}
			return act(svcInitScript, func() error { return svcRun("rc-update", "add", svcName, "default") })
		}
		return act(svcInitScript, func() error { return s.Install() })
	default:
		return act(initName, func() error { return s.Install() })
	}
}

func svcEnableSystemd() error {
	if err := svcRun("systemctl", "daemon-reload"); err != nil {
		return err
	}
	return svcRun("systemctl", "enable", svcName+".service")
}

// svcUninstall stops the service and removes or disables its
// definition. Data and configuration stay.
func svcUninstall(initName string, stdout io.Writer) error {
	s, err := newSvc(initName, nil)
	if err != nil {
		return err
	}
	_ = s.Stop() // not running is fine
	var what string
	switch {
	case initName == svcSystemd && svcExists(svcEtcUnit):
		what = "removed " + svcEtcUnit
		err = s.Uninstall()
	case initName == svcSystemd && svcAnyExists(svcVendorUnits):
		what = "disabled (the package's unit stays until the package is removed)"
		err = svcRun("systemctl", "disable", svcName+".service")
	case initName == svcSystemd:
		return service.ErrNotInstalled
	case (initName == svcProcd || initName == svcOpenRC) && !svcExists(svcInitScript):
		return service.ErrNotInstalled
	case (initName == svcProcd || initName == svcOpenRC) && svcPackageOwnsInit():
		what = "disabled (the package's init script stays until the package is removed)"
		if initName == svcProcd {
			err = svcRun(svcInitScript, "disable")
		} else {
			err = svcRun("rc-update", "del", svcName)
		}
	default:
		what = "removed"
		err = s.Uninstall()
	}
	if err != nil {
		return fmt.Errorf("uninstall (%s): %w", initName, err)
	}
	fmt.Fprintf(stdout, "%s: stopped and %s; configuration and data are kept (data_dir, %s by default)\n", svcName, what, svcStateDir)
	return nil
}

// svcPackageOwnsInit reports whether an ipk (opkg) or apk installed
// /etc/init.d/leadport-agent.
func svcPackageOwnsInit() bool {
	for _, list := range []string{"/usr/lib/opkg/info/" + svcName + ".list", "/lib/apk/db/installed"} {
		b, err := os.ReadFile(list)
		if err != nil {
			continue
		}
		s := string(b)
		if strings.HasSuffix(list, ".list") && strings.Contains(s, svcInitScript) {
			return true
		}
		// apk's database: a "P:leadport-agent" stanza listing etc/init.d.
		if strings.Contains(s, "\nP:"+svcName+"\n") || strings.HasPrefix(s, "P:"+svcName+"\n") {
			return true
		}
	}
	return false
}

// svcCheckSystemdPaths refuses binaries and configs the unit's sandbox hides:
// ProtectHome=yes hides /home, /root and /run/user; PrivateTmp=yes gives
// the service its own /tmp and /var/tmp.
func svcCheckSystemdPaths(exe, cfg string) error {
	for _, p := range []struct{ what, path string }{{"this binary", exe}, {"the config", cfg}} {
		for _, hidden := range []string{"/home", "/root", "/run/user", "/tmp", "/var/tmp"} {
			if svcUnder(p.path, hidden) {
				hint := "install -m 0755 " + exe + " /usr/local/bin/leadport-agent, then run /usr/local/bin/leadport-agent install"
				if p.what == "the config" {
					hint = "put it in /etc/leadport-agent/"
				}
				return fmt.Errorf("%s is %s, under %s, which the service's sandbox hides: %s", p.what, p.path, hidden, hint)
			}
		}
	}
	return nil
}

// svcAgentDirs lists the directories the agent writes, as the config names
// them (absolute, deduplicated), leaving out those the init system makes
// (the runtime directory).
func svcAgentDirs(cfg *config.Config, initName string) (dirs, warnings []string) {
	seen := map[string]bool{}
	add := func(d, what string) {
		if d == "" || d == "." {
			return
		}
		if !filepath.IsAbs(d) {
			warnings = append(warnings, fmt.Sprintf("%s %s is relative: it is resolved against the service's working directory", what, d))
			return
		}
		d = filepath.Clean(d)
		if svcUnder(d, svcRuntimeDir) || seen[d] {
			return
		}
		for s := range seen {
			if svcUnder(d, s) {
				return
			}
		}
		seen[d] = true
		dirs = append(dirs, d)
	}
	add(cfg.DataDir, "data_dir")
	add(filepath.Dir(cfg.Store.KeyFile), "store.key_file's directory")
	if sock := cfg.API.Socket; sock != "" {
		d := filepath.Dir(sock)
		if filepath.IsAbs(d) && (svcUnder(d, "/run") || svcUnder(d, "/var/run")) && !svcUnder(d, svcRuntimeDir) {
			warnings = append(warnings, fmt.Sprintf("api.socket %s: only %s is made at every boot for the service", sock, svcRuntimeDir))
		}
		add(d, "api.socket's directory")
	}
	if initName == svcSystemd && cfg.DataDir != "" && !svcUnder(cfg.DataDir, svcStateDir) {
		warnings = append(warnings, fmt.Sprintf("data_dir %s is outside %s: the unit gets ReadWritePaths for it", cfg.DataDir, svcStateDir))
	}
	return dirs, warnings
}

// svcEnsureUser creates the service's system user and group when missing and
// returns their ids.
func svcEnsureUser() (uid, gid int, err error) {
	if _, err := user.Lookup(svcUser); err != nil {
		argvs := svcUserAddCommands(func(name string) bool {
			if strings.HasPrefix(name, "/") {
				return svcExists(name)
			}
			_, err := exec.LookPath(name)
			return err == nil
		})
		if argvs == nil {
			return 0, 0, fmt.Errorf("user %s does not exist and there is no useradd, adduser or OpenWrt /lib/functions.sh to create it", svcUser)
		}
		for _, argv := range argvs {
			if err := svcRun(argv[0], argv[1:]...); err != nil {
				return 0, 0, fmt.Errorf("creating user %s: %w", svcUser, err)
			}
		}
	}
	u, err := user.Lookup(svcUser)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: %w", svcUser, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("user %s: ids %q/%q are not numbers", svcUser, u.Uid, u.Gid)
	}
	return uid, gid, nil
}

// svcOpenWrtAddUser creates the user with OpenWrt's base-files functions: an
// id free as both uid and gid from 200 up.
const svcOpenWrtAddUser = `. /lib/functions.sh
n=leadport-agent
id=200
while grep -q "^[^:]*:[^:]*:$id:" /etc/passwd /etc/group; do id=$((id + 1)); done
group_exists $n || group_add $n $id
gid=$(grep "^$n:" /etc/group | cut -d: -f3)
user_exists $n || user_add $n $id $gid "Leadport edge agent" /var/run/$n /bin/false`

// svcUserAddCommands are the commands that create the service user, for the
// tools this system has (have reports whether a command or file exists).
func svcUserAddCommands(have func(string) bool) [][]string {
	shell := "/bin/false"
	for _, s := range []string{"/usr/sbin/nologin", "/sbin/nologin"} {
		if have(s) {
			shell = s
			break
		}
	}
	switch {
	case have("useradd"): // shadow-utils: Debian, RHEL, SUSE, ...
		return [][]string{{"useradd", "--system", "--user-group", "--home-dir", svcStateDir, "--no-create-home",
			"--shell", shell, "--comment", "Leadport edge agent", svcUser}}
	case have("adduser") && have("addgroup"): // BusyBox: Alpine
		return [][]string{
			{"addgroup", "-S", svcUser},
			{"adduser", "-S", "-D", "-H", "-h", svcStateDir, "-s", shell, "-G", svcUser, "-g", "Leadport edge agent", svcUser},
		}
	case have("/lib/functions.sh"): // OpenWrt
		return [][]string{{"sh", "-c", svcOpenWrtAddUser}}
	}
	return nil
}

// svcPrepareDir makes dir (mode 0750) and gives it to the service user. An
// existing directory of ours (its path says leadport) is given over with
// everything in it, so files left by a run as root stay readable; another
// existing directory (a data_dir: /srv, say) is left as it is, with a
// warning.
func svcPrepareDir(dir string, uid, gid int) (warning string, err error) {
	_, err = os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", err
		}
		return "", os.Chown(dir, uid, gid)
	case err != nil:
		return "", err
	case !strings.Contains(dir, "leadport"):
		return fmt.Sprintf("%s exists and is not a leadport directory: its owner is left as it is; user %s must be able to write it", dir, svcUser), nil
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return "", err
	}
	return "", filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// svcShareConfig makes a config file that only its owner may read readable by
// the service's group, and its directory when that is ours.
func svcShareConfig(path string, gid int) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o044 != 0 {
		return "", nil // readable by group or others already: left as chosen
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return "", fmt.Errorf("%s: user %s cannot read it: %w", path, svcUser, err)
	}
	if err := os.Chmod(path, fi.Mode().Perm()|0o040); err != nil {
		return "", err
	}
	msg := fmt.Sprintf("made %s readable by group %s", path, svcUser)
	dir := filepath.Dir(path)
	if di, err := os.Stat(dir); err == nil && strings.Contains(filepath.Base(dir), "leadport") && di.Mode().Perm()&0o001 == 0 {
		if os.Chown(dir, -1, gid) == nil && os.Chmod(dir, di.Mode().Perm()|0o050) == nil {
			msg += " (and " + dir + ")"
		}
	}
	return msg, nil
}

// renderSystemdUnit is packaging/leadport-agent.service with ExecStart
// running exe with config, and extra directories in ReadWritePaths. For
// the packaged binary and config it is the file itself.
func renderSystemdUnit(exe, cfg string, extraRW []string) (string, error) {
	words := []string{exe, "run", "--config", cfg}
	for i, w := range words {
		kind := sdArg
		if i == 0 {
			kind = sdExe
		}
		q, err := systemdQuote(w, kind)
		if err != nil {
			return "", err
		}
		words[i] = q
	}
	out, err := svcReplaceLine(packaging.SystemdUnit, "ExecStart=", "ExecStart="+strings.Join(words, " "))
	if err != nil {
		return "", err
	}
	if len(extraRW) > 0 {
		rw := []string{svcStateDir}
		for _, d := range extraRW {
			q, err := systemdQuote(d, sdPath)
			if err != nil {
				return "", err
			}
			rw = append(rw, q)
		}
		if out, err = svcReplaceLine(out, "ReadWritePaths=", "ReadWritePaths="+strings.Join(rw, " ")); err != nil {
			return "", err
		}
	}
	return out, svcTemplateSafe(out)
}

// renderProcdInit is packaging/openwrt/leadport-agent.init with PROG and
// CONFIG set.
func renderProcdInit(exe, cfg string) (string, error) {
	out, err := svcReplaceLine(packaging.ProcdInit, "PROG=", "PROG="+svcShellQuote(exe))
	if err == nil {
		out, err = svcReplaceLine(out, "CONFIG=", "CONFIG="+svcShellQuote(cfg))
	}
	if err != nil {
		return "", err
	}
	return out, svcTemplateSafe(out)
}

// renderOpenRCInit is packaging/openrc/leadport-agent.initd with command
// and cfgfile set. OpenRC evaluates command_args, where cfgfile sits in
// single quotes: paths with a single quote are refused.
func renderOpenRCInit(exe, cfg string) (string, error) {
	for _, p := range []string{exe, cfg} {
		if strings.ContainsAny(p, "'\n") {
			return "", fmt.Errorf("path %q: quotes and newlines are not supported in an OpenRC script", p)
		}
	}
	out, err := svcReplaceLine(packaging.OpenRCInit, "command=", "command='"+exe+"'")
	if err == nil {
		out, err = svcReplaceLine(out, "cfgfile=", "cfgfile='"+cfg+"'")
	}
	if err != nil {
		return "", err
	}
	return out, svcTemplateSafe(out)
}

// svcReplaceLine replaces the one line starting with prefix.
func svcReplaceLine(text, prefix, line string) (string, error) {
	lines := strings.SplitAfter(text, "\n")
	n := 0
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
			nl := ""
			if strings.HasSuffix(l, "\n") {
				nl = "\n"
			}
			lines[i] = line + nl
		}
	}
	if n != 1 {
		return "", fmt.Errorf("service definition: %d lines start with %q, want 1", n, prefix)
	}
	return strings.Join(lines, ""), nil
}

// svcTemplateSafe refuses text that kardianos' template engine would not pass
// through unchanged.
func svcTemplateSafe(text string) error {
	if strings.Contains(text, "{{") {
		return errors.New(`paths containing "{{" are not supported`)
	}
	return nil
}

// Kinds of words in a unit, for systemdQuote.
const (
	sdExe  = iota // ExecStart's executable: no variables; systemd refuses quotes and backslashes in it
	sdArg         // an ExecStart argument: $VAR would be expanded
	sdPath        // a path in a list such as ReadWritePaths
)

// systemdQuote writes one word of a unit: plain when it can be, else in
// double quotes; % is doubled everywhere (specifiers) and $ in arguments
// (variables), so that systemd passes the word on as it is.
func systemdQuote(s string, kind int) (string, error) {
	if s == "" || strings.ContainsAny(s, "\n\r\x00") || kind == sdExe && strings.ContainsAny(s, `"'\`) {
		return "", fmt.Errorf("%q cannot be written into a systemd unit", s)
	}
	plain := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._+-:=,@", r)) {
			plain = false
			break
		}
	}
	if plain {
		return s, nil
	}
	repl := []string{`\`, `\\`, `"`, `\"`, "%", "%%"}
	if kind == sdArg {
		repl = append(repl, "$", "$$")
	}
	return `"` + strings.NewReplacer(repl...).Replace(s) + `"`, nil
}

// svcShellQuote writes a word for sh: plain when it can be, else in single
// quotes.
func svcShellQuote(s string) string {
	plain := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._+-:=,@", r)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// svcUnder reports whether path is dir or inside it.
func svcUnder(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

func svcExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func svcAnyExists(ps []string) bool {
	for _, p := range ps {
		if svcExists(p) {
			return true
		}
	}
	return false
}

// svcSameContent reports whether the file at path holds want, and whether it
// exists at all.
func svcSameContent(path, want string) (same, exists bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, !errors.Is(err, fs.ErrNotExist)
	}
	return string(b) == want, true
}

// serviceContext is the context `run` should stop on: SIGINT or SIGTERM,
// and on Windows, when the service control manager started the process,
// the manager's stop request. A Windows service must answer the manager
// within 30 s of being started, which kardianos' Run does; on other
// systems it is signal.NotifyContext.
func serviceContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	if runtime.GOOS != "windows" || service.Interactive() {
		return ctx, stop
	}
	ctx, cancel := context.WithCancel(ctx)
	s, err := service.New(svcSCMProgram{cancel: cancel}, &service.Config{Name: svcName})
	if err == nil {
		go func() {
			_ = s.Run()
			cancel()
		}()
	}
	return ctx, func() { cancel(); stop() }
}

// svcSCMProgram ends the agent when the Windows service manager stops it.
type svcSCMProgram struct{ cancel context.CancelFunc }

func (svcSCMProgram) Start(service.Service) error  { return nil }
func (p svcSCMProgram) Stop(service.Service) error { p.cancel(); return nil }
