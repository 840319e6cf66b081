package doctor

import (
	"context"
	"fmt"
	"time"
)

// The edge's verifier refuses tokens about a minute off its clock; the
// agent corrects by the offset it measures, but a clock that far off is
// worth fixing before it matters.
const (
	edgeClockWarn = 10 * time.Second
	edgeClockFail = 60 * time.Second
)

// edgeClock compares this host's clock with the Leadport edge's (the Date
// of its answer to the upstream check's OPTIONS): the tokens the agent
// signs are refused when they look a minute old or young. It reports
// nothing when the edge's answer carried no Date.
type edgeClock struct{}

func (edgeClock) Name() string { return "edge clock" }

func (edgeClock) Run(_ context.Context, env *Env) []Result {
	env.mu.Lock()
	off, ok := env.edgeOffset, env.edgeDate
	env.mu.Unlock()
	if !ok {
		return nil
	}
	var r Result
	gap := off.Abs()
	dir := "ahead of"
	if off > 0 {
		dir = "behind"
	}
	r.Found = fmt.Sprintf("this host is %.1f s %s the edge (from the Date of its answer)", gap.Seconds(), dir)
	switch {
	case gap > edgeClockFail:
		r.Status = Fail
		r.Fix = "set the time and enable NTP (timedatectl set-ntp true): the agent corrects its signatures by the offset it measures, but only once the edge has answered it"
	case gap > edgeClockWarn:
		r.Status = Warn
		r.Fix = "enable NTP (timedatectl set-ntp true): the edge refuses calls signed a minute off its clock"
	default:
		r.Status = OK
	}
	return []Result{r}
}
