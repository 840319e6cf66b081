package main

import (
	"fmt"
	"io"
	"os"

	"github.com/leadport/leadport-agent/agent/config"
)

// defaultConfigPath is where the packages install the configuration: run
// (as root), status, doctor, identity and install all look there when not
// told otherwise.
const defaultConfigPath = config.PackagedPath

func configCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "check" {
		return errUsage
	}
	if _, err := config.Load(args[1]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", args[1])
	return nil
}

// Where doctorConfigFile found the file.
const (
	doctorFromFlag    = "--config"
	doctorFromEnv     = "LEADPORT_CONFIG"
	doctorFromDefault = "default path"
	doctorFromNone    = ""
)

// doctorConfigFile picks the file the way the service finds it: --config,
// else $LEADPORT_CONFIG, else the packaged path when it exists, else none
// (built-in defaults). The commands that read the config all look for it
// so.
func doctorConfigFile(flagPath, envPath, defaultPath string) (path, source string) {
	switch {
	case flagPath != "":
		return flagPath, doctorFromFlag
	case envPath != "":
		return envPath, doctorFromEnv
	}
	if _, err := os.Stat(defaultPath); err == nil {
		return defaultPath, doctorFromDefault
	}
	return "", doctorFromNone
}
