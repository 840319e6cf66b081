package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// dataDir checks that the agent's user can write data_dir and nobody else
// can look in: it exists (or can be made), is writable, mode and owner.
type dataDir struct{}

func (dataDir) Name() string { return "data dir" }

func (c dataDir) Run(_ context.Context, env *Env) []Result { return []Result{c.check(env)} }

func (dataDir) check(env *Env) Result {
	var r Result
	dir := abs(env.Config.DataDir)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		parent := dir
		for {
			next := filepath.Dir(parent)
			if next == parent {
				break
			}
			parent = next
			if _, err := os.Stat(parent); err == nil {
				break
			}
		}
		if err := tryWrite(parent); err != nil {
			r.Status = Fail
			r.Found = fmt.Sprintf("%s does not exist, and %s cannot create it: %v", dir, env.self.name, pathErr(err))
			r.Fix = fmt.Sprintf("mkdir -p %s && chmod 700 %s", dir, dir)
			if env.owner.known {
				r.Fix += fmt.Sprintf(" && chown %s: %s", env.owner.name, dir)
			}
			return r
		}
		r.Status = OK
		r.Found = dir + " does not exist yet: the agent creates it at first start (mode 0700)"
		return r
	}
	if errors.Is(err, fs.ErrPermission) {
		return env.cannotLook(r, dir)
	}
	if err != nil {
		r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("%s: %v", dir, pathErr(err)), "check data_dir"
		return r
	}
	if !fi.IsDir() {
		r.Status, r.Found = Fail, dir+" is not a directory"
		r.Fix = "move it aside, or set data_dir to a directory"
		return r
	}

	if uid, _, ok := fileOwner(fi); ok && env.service.known && uid == env.service.uid && env.self.uid != 0 && env.self.uid != uid {
		// A packaged install looked at by a technician's own account.
		r.Status = Skip
		r.Found = fmt.Sprintf("%s belongs to the service user %s: run doctor as root to check it", dir, env.service.name)
		return r
	}

	var problems, fixes []string
	status := OK
	worse := func(s Status) {
		if s == Fail || status == OK {
			status = s
		}
	}
	writable := true
	if err := tryWrite(dir); err != nil {
		writable = false
		worse(Fail)
		problems = append(problems, fmt.Sprintf("not writable by %s (%v)", env.self.name, pathErr(err)))
		if env.owner.known {
			fixes = append(fixes, fmt.Sprintf("chown -R %s: %s", env.owner.name, dir))
		}
	}
	mode := fi.Mode().Perm()
	if modeChecks {
		switch {
		case mode&0o002 != 0:
			worse(Fail)
			problems = append(problems, fmt.Sprintf("mode %04o: every user on this host can change the store", mode))
			fixes = append(fixes, "chmod 750 "+dir)
		case mode&0o005 != 0:
			worse(Warn)
			problems = append(problems, fmt.Sprintf("mode %04o: every user on this host can look into it", mode))
			fixes = append(fixes, "chmod 750 "+dir)
		}
	}
	ownerNote := ""
	if uid, gid, ok := fileOwner(fi); ok && env.owner.known {
		ownerNote = ", owner " + userName(uid)
		if uid != env.owner.uid {
			who := env.owner.name
			if env.owner.service {
				who = "the service user " + who
			}
			// Someone else's directory: the agent's user can write it
			// only through the group or other bits (or as root).
			canWrite := env.owner.uid == 0 || mode&0o003 == 0o003 ||
				(slices.Contains(env.owner.gids, gid) && mode&0o030 == 0o030)
			if canWrite || !writable {
				worse(Warn)
				problems = append(problems, fmt.Sprintf("owned by %s, not %s", userName(uid), who))
			} else {
				worse(Fail)
				problems = append(problems, fmt.Sprintf("owned by %s: %s cannot write it", userName(uid), who))
			}
			fixes = append(fixes, fmt.Sprintf("chown -R %s: %s", env.owner.name, dir))
		}
	}
	r.Status = status
	if len(problems) == 0 {
		r.Found = fmt.Sprintf("%s: writable, mode %04o%s", dir, mode, ownerNote)
		return r
	}
	r.Found = dir + ": " + strings.Join(problems, "; ")
	r.Fix = strings.Join(uniq(fixes), " && ")
	return r
}
