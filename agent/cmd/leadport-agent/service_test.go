package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/leadport/leadport-agent/agent/service"
)

func TestParseServiceArgs(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		action string
		args   []string
		want   svcArgs
		err    error  // errors.Is target, or nil
		errSub string // substring of another error
	}{
		{action: "install", want: svcArgs{action: "install", config: service.DefaultConfig()}},
		{action: "install", args: []string{"--config", "/etc/x/agent.yaml"}, want: svcArgs{action: "install", config: "/etc/x/agent.yaml"}},
		{action: "install", args: []string{"-config=/etc/x/../y/agent.yaml"}, want: svcArgs{action: "install", config: "/etc/y/agent.yaml"}},
		{action: "install", args: []string{"--config", "agent.yaml"}, want: svcArgs{action: "install", config: filepath.Join(wd, "agent.yaml")}},
		{action: "install", args: []string{"--config", ""}, errSub: "empty file name"},
		{action: "install", args: []string{"--config"}, errSub: "flag needs an argument"},
		{action: "install", args: []string{"agent.yaml"}, err: errUsage},
		{action: "install", args: []string{"--user", "x"}, errSub: "flag provided but not defined"},
		{action: "install", args: []string{"-h"}, err: flag.ErrHelp},
		{action: "uninstall", want: svcArgs{action: "uninstall"}},
		{action: "uninstall", args: []string{"--purge"}, errSub: "flag provided but not defined"},
		{action: "uninstall", args: []string{"now"}, err: errUsage},
		{action: "start", want: svcArgs{action: "start"}},
		{action: "stop", want: svcArgs{action: "stop"}},
		{action: "restart", want: svcArgs{action: "restart"}},
		{action: "start", args: []string{"--config", "x.yaml"}, errSub: "flag provided but not defined"},
		{action: "restart", args: []string{"--", "x"}, err: errUsage},
	}
	for _, tc := range tests {
		t.Run(tc.action+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			got, err := parseSvcArgs(tc.action, tc.args, &bytes.Buffer{})
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
			case tc.errSub != "":
				if err == nil || !strings.Contains(err.Error(), tc.errSub) {
					t.Fatalf("err = %v, want one containing %q", err, tc.errSub)
				}
			case err != nil:
				t.Fatalf("err = %v", err)
			case got != tc.want:
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The service commands through main's dispatch: usage errors exit 2, a
// non-root user is told to use sudo.
func TestServiceCommandsCLI(t *testing.T) {
	old := svcGeteuid
	svcGeteuid = func() int { return 1000 }
	t.Cleanup(func() { svcGeteuid = old })
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"install", "extra"}, 2, "usage: leadport-agent install [--config FILE]"},
		{[]string{"uninstall", "--force"}, 1, "flag provided but not defined: -force"},
		{[]string{"stop", "x"}, 2, "usage: leadport-agent stop"},
		{[]string{"start"}, 1, "needs root: sudo leadport-agent start"},
		{[]string{"install", "--config", "/etc/leadport-agent/agent.yaml"}, 1, "needs root: sudo leadport-agent install"},
	}
	if runtime.GOOS == "windows" {
		t.Skip("no root on Windows")
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}
