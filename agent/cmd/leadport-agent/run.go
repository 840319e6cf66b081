package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/agent/config"
)

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath(), "configuration file (env LEADPORT_CONFIG); none: built-in defaults")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := agent.NewLogger(stderr, cfg.Log)
	if *path == "" {
		log.Info("no configuration file: running on built-in defaults", "data_dir", cfg.DataDir)
	}
	a, err := agent.Open(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tuneGC()
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
