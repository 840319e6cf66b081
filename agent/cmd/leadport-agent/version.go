package main

import (
	"fmt"
	"io"

	"github.com/leadport/leadport-agent/agent"
)

func versionCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) != 0 {
		return errUsage
	}
	fmt.Fprintln(stdout, agent.Version())
	return nil
}
