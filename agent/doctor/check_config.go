package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/leadport/leadport-agent/agent/config"
)

// configCheck loads the configuration every other check reads (into
// Env.Config), and lists every problem of an invalid one.
type configCheck struct{}

func (configCheck) Name() string { return "config" }

func (c configCheck) Run(_ context.Context, env *Env) []Result {
	r, cfg := c.check(env)
	env.Config = cfg
	return []Result{r}
}

func (configCheck) check(env *Env) (Result, *config.Config) {
	var r Result
	file := env.opts.Config
	if file == "" {
		cfg := config.Default()
		r.Status = Warn
		r.Found = fmt.Sprintf("no configuration file: built-in defaults (data_dir %s)", cfg.DataDir)
		r.Fix = fmt.Sprintf("copy packaging/leadport-agent.example.yaml to %s and edit it, or pass --config FILE", config.PackagedPath)
		return r, cfg
	}
	cfg, err := config.Load(file)
	if err == nil {
		r.Status = OK
		r.Found = file + ": valid"
		if env.opts.FromEnv {
			r.Found += " (from $LEADPORT_CONFIG)"
		}
		return r, cfg
	}
	r.Status = Fail
	var ce *config.Error
	if errors.As(err, &ce) {
		n := len(ce.Problems)
		r.Found = fmt.Sprintf("%s: %d problem%s", file, n, plural(n))
		for _, p := range ce.Problems {
			p.File = "" // named once, above
			r.Details = append(r.Details, p.String())
		}
		r.Fix = "correct the file (leadport-agent config check " + file + " lists the same problems)"
		return r, nil
	}
	r.Found = fmt.Sprintf("cannot read %s: %v", file, pathErr(err))
	switch {
	case errors.Is(err, fs.ErrNotExist) && env.opts.FromEnv:
		r.Fix = "$LEADPORT_CONFIG names a missing file: correct it or unset it"
	case errors.Is(err, fs.ErrNotExist):
		r.Fix = "check the path (the packaged place is " + config.PackagedPath + ")"
	case errors.Is(err, fs.ErrPermission):
		r.Fix = "run doctor as root or as the agent's user, or make the file readable by it"
	default:
		r.Fix = "check the path"
	}
	return r, nil
}
