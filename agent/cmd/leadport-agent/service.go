package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/leadport/leadport-agent/agent/service"
)

// svcGeteuid is os.Geteuid; a test plays a user other than root.
var svcGeteuid = os.Geteuid

// svcArgs is a parsed service command line.
type svcArgs struct {
	action string // install, uninstall, start, stop, restart
	config string // install only: absolute path of the configuration file
}

// parseSvcArgs reads the arguments of one service action.
func parseSvcArgs(action string, args []string, stderr io.Writer) (svcArgs, error) {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var path *string
	if action == "install" {
		path = fs.String("config", service.DefaultConfig(), "configuration file the service runs with")
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

// serviceCmd manages the system service (package service): install,
// uninstall, start, stop, restart.
func serviceCmd(action string) func(args []string, stdout, stderr io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		sa, err := parseSvcArgs(action, args, stderr)
		if err != nil {
			return err
		}
		if runtime.GOOS != "windows" && svcGeteuid() != 0 {
			return fmt.Errorf("managing the system service needs root: sudo leadport-agent %s", action)
		}
		switch action {
		case "install":
			return service.Install(sa.config, stdout, stderr)
		case "uninstall":
			return service.Uninstall(stdout)
		default:
			return service.Control(action, stdout)
		}
	}
}
