package doctor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	synccommand "github.com/leadport/leadport-agent/sync/command"
)

// clock looks for a clock that is plainly wrong. Signed commands carry
// issue and expiry times that a device accepts with at most
// synccommand.Skew (5 minutes) of difference, and TLS certificates are
// judged by the local clock too, so a device whose clock is off refuses the
// platform's erase requests and may not reach the broker. What can be told
// without another time source: a year before 2024 (a box without a
// real-time clock that booted without network time often starts in 1970
// or 2000), a time before a broker certificate's start of validity (the
// broker check notes it), and on Linux whether the system says NTP has
// synchronised it. Comparing with a server's time would need a trusted
// time source the device does not have offline, so skew itself is not
// measured. It needs no config.
type clock struct{}

func (clock) Name() string { return "clock" }

func (clock) Run(_ context.Context, env *Env) []Result {
	var r Result
	now := time.Now()
	stamp := now.UTC().Format("2006-01-02 15:04:05 UTC")
	if now.Year() < 2024 {
		r.Status = Fail
		r.Found = stamp + ": the clock is wrong"
		r.Fix = fmt.Sprintf("set the time and enable NTP (timedatectl set-ntp true, or the box's NTP setting): signed commands allow only %s of difference", synccommand.Skew)
		return []Result{r}
	}
	env.mu.Lock()
	nb, nbOf := env.notBefore, env.notBeforeOf
	env.mu.Unlock()
	if !nb.IsZero() && now.Before(nb) {
		r.Status = Fail
		r.Found = fmt.Sprintf("%s: behind, the certificate of %s is valid only from %s", stamp, nbOf, nb.UTC().Format(time.RFC3339))
		r.Fix = "set the time and enable NTP (timedatectl set-ntp true, or the box's NTP setting)"
		return []Result{r}
	}
	synced, how := ntp()
	switch synced {
	case "yes":
		r.Status, r.Found = OK, stamp+": synchronised ("+how+")"
	case "no":
		r.Status, r.Found = Warn, stamp+": not synchronised ("+how+")"
		r.Fix = fmt.Sprintf("enable NTP (timedatectl set-ntp true) and let UDP 123 out: signed commands allow only %s of difference", synccommand.Skew)
	default:
		r.Status, r.Found = OK, stamp+": plausible (whether NTP synchronises it cannot be told here)"
	}
	return []Result{r}
}

// ntp says "yes", "no" or "" (cannot tell), and from where.
func ntp() (string, string) {
	if runtime.GOOS != "linux" {
		return "", ""
	}
	// systemd-timesyncd touches this file once it has synchronised.
	if _, err := os.Stat("/run/systemd/timesync/synchronized"); err == nil {
		return "yes", "systemd-timesyncd"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "timedatectl", "show", "-p", "NTPSynchronized", "--value").Output()
	if err != nil {
		return "", ""
	}
	switch strings.TrimSpace(string(out)) {
	case "yes":
		return "yes", "timedatectl"
	case "no":
		return "no", "timedatectl"
	}
	return "", ""
}
