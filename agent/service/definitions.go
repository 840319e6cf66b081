package service

import (
	"errors"
	"fmt"
	"strings"

	"github.com/leadport/leadport-agent/packaging"
)

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
	out, err := replaceLine(packaging.SystemdUnit, "ExecStart=", "ExecStart="+strings.Join(words, " "))
	if err != nil {
		return "", err
	}
	if len(extraRW) > 0 {
		rw := []string{stateDir}
		for _, d := range extraRW {
			q, err := systemdQuote(d, sdPath)
			if err != nil {
				return "", err
			}
			rw = append(rw, q)
		}
		if out, err = replaceLine(out, "ReadWritePaths=", "ReadWritePaths="+strings.Join(rw, " ")); err != nil {
			return "", err
		}
	}
	return out, templateSafe(out)
}

// renderProcdInit is packaging/openwrt/leadport-agent.init with PROG and
// CONFIG set.
func renderProcdInit(exe, cfg string) (string, error) {
	out, err := replaceLine(packaging.ProcdInit, "PROG=", "PROG="+shellQuote(exe))
	if err == nil {
		out, err = replaceLine(out, "CONFIG=", "CONFIG="+shellQuote(cfg))
	}
	if err != nil {
		return "", err
	}
	return out, templateSafe(out)
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
	out, err := replaceLine(packaging.OpenRCInit, "command=", "command='"+exe+"'")
	if err == nil {
		out, err = replaceLine(out, "cfgfile=", "cfgfile='"+cfg+"'")
	}
	if err != nil {
		return "", err
	}
	return out, templateSafe(out)
}

// replaceLine replaces the one line starting with prefix.
func replaceLine(text, prefix, line string) (string, error) {
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

// templateSafe refuses text that kardianos' template engine would not pass
// through unchanged.
func templateSafe(text string) error {
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

// shellQuote writes a word for sh: plain when it can be, else in single
// quotes.
func shellQuote(s string) string {
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
