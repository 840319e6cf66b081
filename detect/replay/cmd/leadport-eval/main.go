// Command leadport-eval measures the rules' detection quality: it replays
// labelled traces of the behaviour models (docs/eval-models.md) through
// the rules in simulated time and prints, per model, false blocks of
// people and attempts until machines are caught. `make eval` runs it at
// full size; it exits 1 when a target is missed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/replay"
)

func main() {
	days := flag.Int("days", 10000, "agent-days per human and honest model")
	sessions := flag.Int("sessions", 1000, "dialing sessions per machine model")
	scenarios := flag.Int("scenarios", 500, "scenarios per forwarding and trunking model")
	seed := flag.Uint64("seed", 1, "seed of the trace generator")
	policyFile := flag.String("policy", "", "policy document (JSON) to evaluate instead of the defaults")
	only := flag.String("models", "", "evaluate only the models whose names contain this")
	flag.Parse()

	pol := policy.Default()
	if *policyFile != "" {
		b, err := os.ReadFile(*policyFile)
		if err != nil {
			fail(err)
		}
		if pol, err = policy.Parse(b); err != nil {
			fail(err)
		}
	}
	start := time.Now()
	var models []replay.Model
	for _, m := range replay.Models() {
		if strings.Contains(m.Name, *only) {
			models = append(models, m)
		}
	}
	rep, err := replay.Evaluate(models, pol, replay.EvalOptions{Days: *days, Sessions: *sessions, Scenarios: *scenarios, Seed: *seed})
	if err != nil {
		fail(err)
	}
	rep.Print(os.Stdout)
	fmt.Printf("\nseed %d, %s\n", *seed, time.Since(start).Round(time.Millisecond))
	if !rep.Pass() {
		fmt.Println("FAIL: a target was missed")
		os.Exit(1)
	}
	fmt.Println("PASS: every target met")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "leadport-eval:", err)
	os.Exit(2)
}
