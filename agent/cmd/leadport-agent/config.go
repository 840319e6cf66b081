package main

import (
	"fmt"
	"io"

	"github.com/leadport/leadport-agent/agent/config"
)

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
