package main

import (
	"context"
	"flag"
	"io"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/agent/doctor"
)

// doctorCmd checks the installation (package doctor) and prints the
// report: text, the header first while the network checks wait, or JSON.
// It exits 1 when any check fails.
func doctorCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (default: $LEADPORT_CONFIG, else "+defaultConfigPath+" when it exists, else built-in defaults)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return errUsage
	}
	file, source := doctorConfigFile(*path, config.DefaultPath(), defaultConfigPath)
	opts := doctor.Options{Config: file, FromEnv: source == doctorFromEnv}
	if !*asJSON {
		opts.Begin = func(r *doctor.Report) { r.WriteHeader(stdout) }
	}
	rep := doctor.Run(context.Background(), opts)
	if *asJSON {
		if err := rep.WriteJSON(stdout); err != nil {
			return err
		}
	} else {
		rep.WriteChecks(stdout)
	}
	return rep.Err()
}
