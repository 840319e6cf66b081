package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/agent/service"
	"github.com/leadport/leadport-agent/detect/sipproxy"
)

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath(), "configuration file (env LEADPORT_CONFIG); default: "+defaultConfigPath+" as root when it exists, else built-in defaults")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return errUsage
	}
	// The packages install the configuration there: status and doctor
	// look there too, so all three agree without --config.
	if *path == "" && os.Geteuid() == 0 && fileExists(defaultConfigPath) {
		*path = defaultConfigPath
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := agent.NewLogger(stderr, cfg.Log)
	if *path == "" {
		log.Info("no configuration file: running on built-in defaults", "data_dir", cfg.DataDir)
	}
	// sipgo's timers are the process's: set before the proxy exists.
	sipproxy.SetTransactionLinger(cfg.SIP.TransactionLinger())
	a, err := agent.Open(cfg, log)
	if err != nil {
		return err
	}
	// SIGINT/SIGTERM end it; under the Windows service manager, its stop.
	ctx, stop := service.Context(context.Background())
	defer stop()
	tuneGC(int64(cfg.MemoryBudget))
	procs := newProcs()
	a.OnBacklog = procs.wake
	go procs.run(ctx, log)
	stopProfile, err := startProfiles(log)
	if err != nil {
		return err
	}
	defer stopProfile()
	if err := a.Run(ctx); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}
