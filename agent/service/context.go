package service

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	kardianos "github.com/kardianos/service"
)

// Context is the context `run` should stop on: SIGINT or SIGTERM,
// and on Windows, when the service control manager started the process,
// the manager's stop request. A Windows service must answer the manager
// within 30 s of being started, which kardianos' Run does; on other
// systems it is signal.NotifyContext.
func Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	if runtime.GOOS != "windows" || kardianos.Interactive() {
		return ctx, stop
	}
	ctx, cancel := context.WithCancel(ctx)
	s, err := kardianos.New(scmProgram{cancel: cancel}, &kardianos.Config{Name: serviceName})
	if err == nil {
		go func() {
			_ = s.Run()
			cancel()
		}()
	}
	return ctx, func() { cancel(); stop() }
}

// scmProgram ends the agent when the Windows service manager stops it.
type scmProgram struct{ cancel context.CancelFunc }

func (scmProgram) Start(kardianos.Service) error  { return nil }
func (p scmProgram) Stop(kardianos.Service) error { p.cancel(); return nil }
