package service

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	kardianos "github.com/kardianos/service"

	"github.com/leadport/leadport-agent/agent/config"
)

// installSpec is what install needs to write a service definition.
type installSpec struct {
	exe, config string
	// extraRW are directories outside stateDir and runtimeDir that the agent
	// writes (data_dir, key file, socket elsewhere); systemd only.
	extraRW []string
}

// install installs and enables the service; it does not start it.
func install(configFile, initName string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(configFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w\n(write one first: the packages install %s; packaging/leadport-agent.example.yaml documents every key)", err, packagedConfig)
		}
		return err
	}
	exe, err := executable()
	if err != nil {
		return fmt.Errorf("finding this binary: %w", err)
	}
	spec := &installSpec{exe: exe, config: configFile}
	runAs := "root"
	if runtime.GOOS == "windows" {
		runAs = "LocalSystem"
	}
	dataDir := cfg.DataDir
	var dirs []string
	if ourInit(initName) {
		runAs = serviceUser
		if initName == initSystemd {
			if err := checkSystemdPaths(exe, configFile); err != nil {
				return err
			}
		}
		var warns []string
		dirs, warns = agentDirs(cfg, initName)
		for _, w := range warns {
			fmt.Fprintf(stderr, "warning: %s\n", w)
		}
		if initName == initSystemd {
			for _, d := range dirs {
				if !under(d, stateDir) && !under(d, runtimeDir) {
					spec.extraRW = append(spec.extraRW, d)
				}
			}
		}
	} else if runtime.GOOS == "windows" && !filepath.IsAbs(dataDir) {
		fmt.Fprintf(stderr, "warning: set data_dir in %s to an absolute path (for example C:\\ProgramData\\leadport-agent\\data): a Windows service starts in C:\\Windows\\System32\n", configFile)
	}
	// Refuse a conflicting installation before changing anything.
	if _, err := installDefinition(nil, initName, spec); err != nil && !errors.Is(err, errDryRun) {
		return err
	}
	if ourInit(initName) {
		uid, gid, err := ensureUser()
		if err != nil {
			return err
		}
		for _, d := range dirs {
			warn, err := prepareDir(d, uid, gid)
			if err != nil {
				return err
			}
			if warn != "" {
				fmt.Fprintf(stderr, "warning: %s\n", warn)
			}
		}
		if msg, err := shareConfig(configFile, gid); err != nil {
			fmt.Fprintf(stderr, "warning: %v\n", err)
		} else if msg != "" {
			fmt.Fprintln(stdout, msg)
		}
	}

	s, err := newService(initName, spec)
	if err != nil {
		return err
	}
	where, err := installDefinition(s, initName, spec)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: installed (%s): %s, enabled at boot\n", serviceName, initName, where)
	fmt.Fprintf(stdout, "  runs  %s run --config %s\n", exe, configFile)
	fmt.Fprintf(stdout, "  as    %s; data in %s\n", runAs, dataDir)
	fmt.Fprintf(stdout, "start it with: leadport-agent start\n")
	return nil
}

// errDryRun is what installDefinition returns, given no service,
// where it would have written or enabled the definition.
var errDryRun = errors.New("dry run")

// installDefinition writes and enables the service definition, or only
// enables one a package installed, and returns where the definition is.
// With s nil it only checks: errDryRun, or why it cannot install.
func installDefinition(s kardianos.Service, initName string, spec *installSpec) (string, error) {
	act := func(where string, f func() error) (string, error) {
		if s == nil {
			return where, errDryRun
		}
		return where, f()
	}
	switch initName {
	case initSystemd:
		want, err := renderSystemdUnit(spec.exe, spec.config, spec.extraRW)
		if err != nil {
			return "", err
		}
		if same, exists := sameContent(etcUnit, want); exists {
			if !same {
				return "", fmt.Errorf("%s exists and runs another binary or config: run `leadport-agent uninstall` first", etcUnit)
			}
			return act(etcUnit, enableSystemd)
		}
		for _, v := range vendorUnits {
			if same, _ := sameContent(v, want); same {
				return act(v, enableSystemd)
			}
		}
		// Anything else: our unit in /etc/systemd/system (overriding a
		// packaged one that runs another binary or config).
		return act(etcUnit, func() error { return s.Install() })
	case initProcd, initOpenRC:
		var want string
		var err error
		if initName == initProcd {
			want, err = renderProcdInit(spec.exe, spec.config)
		} else {
			want, err = renderOpenRCInit(spec.exe, spec.config)
		}
		if err != nil {
			return "", err
		}
		if same, exists := sameContent(initScript, want); exists {
			if !same {
				return "", fmt.Errorf("%s exists and runs another binary or config: remove the package or run `leadport-agent uninstall` first", initScript)
			}
			if initName == initProcd {
				return act(initScript, func() error { return runCommand(initScript, "enable") })
			}
			return act(initScript, func() error { return runCommand("rc-update", "add", serviceName, "default") })
		}
		return act(initScript, func() error { return s.Install() })
	default:
		return act(initName, func() error { return s.Install() })
	}
}

func enableSystemd() error {
	if err := runCommand("systemctl", "daemon-reload"); err != nil {
		return err
	}
	return runCommand("systemctl", "enable", serviceName+".service")
}

// uninstall stops the service and removes or disables its
// checkSystemdPaths refuses binaries and configs the unit's sandbox hides:
// ProtectHome=yes hides /home, /root and /run/user; PrivateTmp=yes gives
// the service its own /tmp and /var/tmp.
func checkSystemdPaths(exe, cfg string) error {
	for _, p := range []struct{ what, path string }{{"this binary", exe}, {"the config", cfg}} {
		for _, hidden := range []string{"/home", "/root", "/run/user", "/tmp", "/var/tmp"} {
			if under(p.path, hidden) {
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

// agentDirs lists the directories the agent writes, as the config names
// them (absolute, deduplicated), leaving out those the init system makes
// (the runtime directory).
func agentDirs(cfg *config.Config, initName string) (dirs, warnings []string) {
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
		if under(d, runtimeDir) || seen[d] {
			return
		}
		for s := range seen {
			if under(d, s) {
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
		if filepath.IsAbs(d) && (under(d, "/run") || under(d, "/var/run")) && !under(d, runtimeDir) {
			warnings = append(warnings, fmt.Sprintf("api.socket %s: only %s is made at every boot for the service", sock, runtimeDir))
		}
		add(d, "api.socket's directory")
	}
	if initName == initSystemd && cfg.DataDir != "" && !under(cfg.DataDir, stateDir) {
		warnings = append(warnings, fmt.Sprintf("data_dir %s is outside %s: the unit gets ReadWritePaths for it", cfg.DataDir, stateDir))
	}
	return dirs, warnings
}

// ensureUser creates the service's system user and group when missing and
// returns their ids.
func ensureUser() (uid, gid int, err error) {
	if _, err := user.Lookup(serviceUser); err != nil {
		argvs := userAddCommands(func(name string) bool {
			if strings.HasPrefix(name, "/") {
				return pathExists(name)
			}
			_, err := exec.LookPath(name)
			return err == nil
		})
		if argvs == nil {
			return 0, 0, fmt.Errorf("user %s does not exist and there is no useradd, adduser or OpenWrt /lib/functions.sh to create it", serviceUser)
		}
		for _, argv := range argvs {
			if err := runCommand(argv[0], argv[1:]...); err != nil {
				return 0, 0, fmt.Errorf("creating user %s: %w", serviceUser, err)
			}
		}
	}
	u, err := user.Lookup(serviceUser)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: %w", serviceUser, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("user %s: ids %q/%q are not numbers", serviceUser, u.Uid, u.Gid)
	}
	return uid, gid, nil
}

// openWrtAddUser creates the user with OpenWrt's base-files functions: an
// id free as both uid and gid from 200 up.
const openWrtAddUser = `. /lib/functions.sh
n=leadport-agent
id=200
while grep -q "^[^:]*:[^:]*:$id:" /etc/passwd /etc/group; do id=$((id + 1)); done
group_exists $n || group_add $n $id
gid=$(grep "^$n:" /etc/group | cut -d: -f3)
user_exists $n || user_add $n $id $gid "Leadport edge agent" /var/run/$n /bin/false`

// userAddCommands are the commands that create the service user, for the
// tools this system has (have reports whether a command or file exists).
func userAddCommands(have func(string) bool) [][]string {
	shell := "/bin/false"
	for _, s := range []string{"/usr/sbin/nologin", "/sbin/nologin"} {
		if have(s) {
			shell = s
			break
		}
	}
	switch {
	case have("useradd"): // shadow-utils: Debian, RHEL, SUSE, ...
		return [][]string{{"useradd", "--system", "--user-group", "--home-dir", stateDir, "--no-create-home",
			"--shell", shell, "--comment", "Leadport edge agent", serviceUser}}
	case have("adduser") && have("addgroup"): // BusyBox: Alpine
		return [][]string{
			{"addgroup", "-S", serviceUser},
			{"adduser", "-S", "-D", "-H", "-h", stateDir, "-s", shell, "-G", serviceUser, "-g", "Leadport edge agent", serviceUser},
		}
	case have("/lib/functions.sh"): // OpenWrt
		return [][]string{{"sh", "-c", openWrtAddUser}}
	}
	return nil
}

// prepareDir makes dir (mode 0750) and gives it to the service user. An
// existing directory of ours (its path says leadport) is given over with
// everything in it, so files left by a run as root stay readable; another
// existing directory (a data_dir: /srv, say) is left as it is, with a
// warning.
func prepareDir(dir string, uid, gid int) (warning string, err error) {
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
		return fmt.Sprintf("%s exists and is not a leadport directory: its owner is left as it is; user %s must be able to write it", dir, serviceUser), nil
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

// shareConfig makes a config file that only its owner may read readable by
// the service's group, and its directory when that is ours.
func shareConfig(path string, gid int) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o044 != 0 {
		return "", nil // readable by group or others already: left as chosen
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return "", fmt.Errorf("%s: user %s cannot read it: %w", path, serviceUser, err)
	}
	if err := os.Chmod(path, fi.Mode().Perm()|0o040); err != nil {
		return "", err
	}
	msg := fmt.Sprintf("made %s readable by group %s", path, serviceUser)
	dir := filepath.Dir(path)
	if di, err := os.Stat(dir); err == nil && strings.Contains(filepath.Base(dir), "leadport") && di.Mode().Perm()&0o001 == 0 {
		if os.Chown(dir, -1, gid) == nil && os.Chmod(dir, di.Mode().Perm()|0o050) == nil {
			msg += " (and " + dir + ")"
		}
	}
	return msg, nil
}
