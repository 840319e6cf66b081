// Command demo shows leadport-agent at work in half a minute, on one
// machine: the agent sits between a simulated PBX and a simulated
// Leadport edge (real sipgo user agents in this program) and syncs with an
// MQTT broker in this program. A few human-paced calls are metered, a
// dialer burst is blocked, a forwarded call is refused, a consent is
// recorded and a signed ping goes through the broker; then
// `leadport-agent status` and the status page show it all.
//
//	make build && go run ./scripts/demo -agent bin/leadport-agent   # or: make demo
//
// It builds nothing: -agent names the binary. Everything lives in a
// temporary directory (or -dir), which is kept: the config, the agent's
// data dir, its socket and its log. The demo runs until Ctrl-C, then stops
// the agent with SIGTERM; -exit stops right after the scenario (a smoke
// test; the exit status is 1 if anything did not happen as it should).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	agent := flag.String("agent", "bin/leadport-agent", "the leadport-agent binary (make build writes bin/leadport-agent)")
	dir := flag.String("dir", "", "directory for the config, data, socket and log; default: a new temporary one")
	port := flag.Int("port", 9797, "port of the status page on 127.0.0.1; another free one when it is taken")
	exit := flag.Bool("exit", false, "stop right after the scenario instead of running until Ctrl-C")
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	slog.SetDefault(quiet) // the SIP library's chatter is not the demo's

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := Start(ctx, Options{Agent: *agent, Dir: *dir, APIPort: *port, Out: os.Stdout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	res, err := d.Scenario(ctx)
	code := 0
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Println("interrupted")
		code = 1
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo:", err)
		code = 1
	default:
		if p := res.Problems(); len(p) > 0 {
			fmt.Println("NOT as expected:")
			for _, s := range p {
				fmt.Println("  -", s)
			}
			code = 1
		}
		if *exit {
			fmt.Printf("Status page: %s/ (stopping now: -exit)\n", d.APIURL)
		} else {
			fmt.Printf("Meanwhile, try: %s status --socket %s; curl -s %s/metrics | grep ^leadport_\n", *agent, d.Socket, d.APIURL)
			fmt.Printf("Status page: %s/ (Ctrl-C to stop)\n", d.APIURL)
			select {
			case <-ctx.Done():
				fmt.Println()
			case <-d.Done():
				fmt.Println("the agent exited on its own")
				code = 1
			}
		}
	}
	d.Close()
	os.Exit(code)
}
