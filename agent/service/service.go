// Package service installs and controls the system service:
// `leadport-agent install [--config F]`, `uninstall`, `start`, `stop`,
// `restart` parse their flags in package main and call Install, Uninstall
// and Control; `run` stops on Context. It goes through
// github.com/kardianos/service (imported as kardianos).
//
// On Linux the service definitions are ours, not kardianos' defaults: the
// systemd unit, the OpenWrt procd script and the OpenRC script in
// packaging/ are built into the binary (package packaging), and Install
// hands kardianos exactly those files with only the binary and config lines
// changed, so a package install and `leadport-agent install` run the agent
// the same way (as the user leadport-agent, restarted one second after any
// exit). Other Linux init systems (SysV, upstart), launchd and Windows get
// kardianos' own service definitions and run the agent as root/LocalSystem.
//
// Files, by role: service.go chooses the init system and starts, stops,
// restarts; install.go writes and enables the definition and prepares the
// user and directories; uninstall.go removes or disables it; definitions.go
// renders the packaged unit and scripts; context.go is `run`'s stop signal
// (and the Windows service manager's).
package service

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	kardianos "github.com/kardianos/service"

	"github.com/leadport/leadport-agent/agent/config"
)

const (
	serviceName    = "leadport-agent"
	serviceUser    = config.ServiceUser // user and group the Linux service runs as
	description    = "Leadport edge agent (SIP policy, usage metering, sync)"
	packagedBin    = "/usr/bin/leadport-agent"
	packagedConfig = config.PackagedPath
	stateDir       = "/var/lib/leadport-agent" // StateDirectory= of the unit
	runtimeDir     = "/run/leadport-agent"     // RuntimeDirectory= of the unit

	etcUnit    = "/etc/systemd/system/" + serviceName + ".service"
	initScript = "/etc/init.d/" + serviceName
)

// vendorUnits are where the deb and rpm packages put the unit.
var vendorUnits = []string{
	"/usr/lib/systemd/system/" + serviceName + ".service",
	"/lib/systemd/system/" + serviceName + ".service",
}

// Init systems, as kardianos names them.
const (
	initSystemd = "linux-systemd"
	initProcd   = "linux-procd"
	initOpenRC  = "linux-openrc"
)

// Test hooks.
var (
	// forceInit, when set, is the kardianos system to use instead of
	// detecting one.
	forceInit string
	// allSystems is kardianos' registry before any ChooseSystem.
	allSystems = kardianos.AvailableSystems()
	executable = func() (string, error) {
		p, err := os.Executable()
		if err != nil {
			return "", err
		}
		return filepath.EvalSymlinks(p)
	}
	// runCommand runs an external command (systemctl, useradd, ...).
	runCommand = func(name string, args ...string) error {
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

// DefaultConfig is the configuration file the service runs with when
// install is given none.
func DefaultConfig() string {
	if runtime.GOOS == "windows" {
		dir := os.Getenv("ProgramData")
		if dir == "" {
			dir = `C:\ProgramData`
		}
		return filepath.Join(dir, serviceName, "agent.yaml")
	}
	return packagedConfig
}

// Install installs and enables the service to run the agent with the
// configuration file configFile (an absolute path); it does not start it.
func Install(configFile string, stdout, stderr io.Writer) error {
	initName, err := chooseInit()
	if err != nil {
		return err
	}
	return install(configFile, initName, stdout, stderr)
}

// Uninstall stops the service and removes or disables its definition.
// Data and configuration stay.
func Uninstall(stdout io.Writer) error {
	initName, err := chooseInit()
	if err != nil {
		return err
	}
	return uninstall(initName, stdout)
}

// Control starts, stops or restarts the service (action is start, stop or
// restart).
func Control(action string, stdout io.Writer) error {
	initName, err := chooseInit()
	if err != nil {
		return err
	}
	s, err := newService(initName, nil)
	if err != nil {
		return err
	}
	if err := kardianos.Control(s, action); err != nil {
		return fmt.Errorf("%s (%s): %w", action, initName, err)
	}
	fmt.Fprintf(stdout, "%s: %s (%s)\n", serviceName, pastTense(action), initName)
	return nil
}

func pastTense(action string) string {
	switch action {
	case "stop":
		return "stopped"
	case "restart":
		return "restarted"
	default:
		return "started"
	}
}

// forcedSystem makes kardianos use one init system whatever it detects.
type forcedSystem struct{ kardianos.System }

func (forcedSystem) Detect() bool { return true }

// chooseInit picks the init system and tells kardianos. On OpenWrt it is
// procd: kardianos would otherwise take /etc/init.d/rcS for rcS first.
func chooseInit() (string, error) {
	want := forceInit
	if want == "" && runtime.GOOS == "linux" && pathExists("/etc/openwrt_release") {
		want = initProcd
	}
	if want == "" {
		kardianos.ChooseSystem(allSystems...)
		s := kardianos.ChosenSystem()
		if s == nil {
			return "", errors.New("no service manager found on this system")
		}
		return s.String(), nil
	}
	for _, s := range allSystems {
		if s.String() == want {
			kardianos.ChooseSystem(forcedSystem{s})
			return want, nil
		}
	}
	return "", fmt.Errorf("service manager %s is not available in this build", want)
}

// ourInit reports whether the service definition for initName comes from
// packaging/ (and the agent runs as serviceUser).
func ourInit(initName string) bool {
	switch initName {
	case initSystemd, initProcd, initOpenRC:
		return true
	}
	return false
}

// noop satisfies kardianos' Interface for install and control.
type noop struct{}

func (noop) Start(kardianos.Service) error { return nil }
func (noop) Stop(kardianos.Service) error  { return nil }

// newService builds the kardianos service. spec is nil for actions that do
// not write a service definition.
func newService(initName string, spec *installSpec) (kardianos.Service, error) {
	c := &kardianos.Config{
		Name:        serviceName,
		DisplayName: "Leadport edge agent",
		Description: description,
		Option: kardianos.KeyValue{
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
		case initSystemd:
			unit, err := renderSystemdUnit(spec.exe, spec.config, spec.extraRW)
			if err != nil {
				return nil, err
			}
			c.Option["SystemdScript"] = unit
		case initProcd:
			script, err := renderProcdInit(spec.exe, spec.config)
			if err != nil {
				return nil, err
			}
			c.Option["SysvScript"] = script // kardianos' procd takes its script here
		case initOpenRC:
			script, err := renderOpenRCInit(spec.exe, spec.config)
			if err != nil {
				return nil, err
			}
			c.Option["OpenRCScript"] = script
		}
	}
	return kardianos.New(noop{}, c)
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

func pathExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func anyExists(ps []string) bool {
	for _, p := range ps {
		if pathExists(p) {
			return true
		}
	}
	return false
}

// sameContent reports whether the file at path holds want, and whether it
// exists at all.
func sameContent(path, want string) (same, exists bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, !errors.Is(err, fs.ErrNotExist)
	}
	return string(b) == want, true
}
