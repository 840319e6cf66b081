package store

import (
	"log/slog"
	"time"
)

// failureLogEvery is the least time between two warnings of one retried
// background task.
const failureLogEvery = time.Minute

// failureLog reports the failures of a task the store retries after
// commits (index merges, merge steps) without flooding the log: the
// first at once, then at most one a minute, each with the failures left
// unlogged since the one before, and a line when the task succeeds
// again. On a full disk the retries come with every few commits, hundreds
// a second on a busy proxy, and the log would bury what else goes wrong.
// Only commits use it, so commitMu guards it.
type failureLog struct {
	what   string    // "merging the subject index"
	last   time.Time // the last warning
	missed int       // failures since it, not logged
	total  int       // failures since the task last succeeded
}

// failed notes a failure at now, logging it unless one was logged less
// than failureLogEvery before.
func (f *failureLog) failed(log *slog.Logger, now time.Time, err error) {
	f.total++
	if !f.last.IsZero() && now.Sub(f.last) < failureLogEvery {
		f.missed++
		return
	}
	log.Warn(f.what+" failed; will retry", "err", err, "failures_not_logged", f.missed)
	f.last, f.missed = now, 0
}

// succeeded notes a success, logging it when failures came before.
func (f *failureLog) succeeded(log *slog.Logger) {
	if f.total == 0 {
		return
	}
	log.Info(f.what+" succeeded again", "failures", f.total)
	*f = failureLog{what: f.what}
}
