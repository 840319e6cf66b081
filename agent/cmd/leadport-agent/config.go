package main

import (
	"fmt"
	"io"

	"github.com/leadport/leadport-agent/agent/config"
)

// defaultConfigPath is where the packages install the configuration: run
// (as root), status, doctor and install all look there when not told
// otherwise.
const defaultConfigPath = "/etc/leadport-agent/agent.yaml"

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
