package service

import (
	"fmt"
	"io"
	"os"
	"strings"

	kardianos "github.com/kardianos/service"
)

// uninstall stops the service and removes or disables its
// definition. Data and configuration stay.
func uninstall(initName string, stdout io.Writer) error {
	s, err := newService(initName, nil)
	if err != nil {
		return err
	}
	_ = s.Stop() // not running is fine
	var what string
	switch {
	case initName == initSystemd && pathExists(etcUnit):
		what = "removed " + etcUnit
		err = s.Uninstall()
	case initName == initSystemd && anyExists(vendorUnits):
		what = "disabled (the package's unit stays until the package is removed)"
		err = runCommand("systemctl", "disable", serviceName+".service")
	case initName == initSystemd:
		return kardianos.ErrNotInstalled
	case (initName == initProcd || initName == initOpenRC) && !pathExists(initScript):
		return kardianos.ErrNotInstalled
	case (initName == initProcd || initName == initOpenRC) && packageOwnsInit():
		what = "disabled (the package's init script stays until the package is removed)"
		if initName == initProcd {
			err = runCommand(initScript, "disable")
		} else {
			err = runCommand("rc-update", "del", serviceName)
		}
	default:
		what = "removed"
		err = s.Uninstall()
	}
	if err != nil {
		return fmt.Errorf("uninstall (%s): %w", initName, err)
	}
	fmt.Fprintf(stdout, "%s: stopped and %s; configuration and data are kept (data_dir, %s by default)\n", serviceName, what, stateDir)
	return nil
}

// packageOwnsInit reports whether an ipk (opkg) or apk installed
// /etc/init.d/leadport-agent.
func packageOwnsInit() bool {
	for _, list := range []string{"/usr/lib/opkg/info/" + serviceName + ".list", "/lib/apk/db/installed"} {
		b, err := os.ReadFile(list)
		if err != nil {
			continue
		}
		s := string(b)
		if strings.HasSuffix(list, ".list") && strings.Contains(s, initScript) {
			return true
		}
		// apk's database: a "P:leadport-agent" stanza listing etc/init.d.
		if strings.Contains(s, "\nP:"+serviceName+"\n") || strings.HasPrefix(s, "P:"+serviceName+"\n") {
			return true
		}
	}
	return false
}
