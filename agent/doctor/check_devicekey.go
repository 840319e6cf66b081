package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/leadport/leadport-agent/store"
)

// deviceKey checks the store's device key: present beside a store that
// needs it, mode 0600, owned by the agent's user, a key by the store's
// measure (store.CheckKeyFile). Its content is never read.
type deviceKey struct{}

func (deviceKey) Name() string { return "device key" }

func (c deviceKey) Run(_ context.Context, env *Env) []Result { return []Result{c.check(env)} }

func (deviceKey) check(env *Env) Result {
	var r Result
	key := abs(env.Config.Store.KeyFile)
	fi, err := os.Stat(key)
	if errors.Is(err, fs.ErrNotExist) {
		db := filepath.Join(abs(env.Config.DataDir), store.FileName)
		if _, err := os.Stat(db); err == nil {
			r.Status = Fail
			r.Found = fmt.Sprintf("%s is missing, but the store %s exists: what it holds cannot be read without the key", key, db)
			r.Fix = fmt.Sprintf("restore %s from a backup, or move %s aside to start with an empty store", key, db)
			return r
		}
		r.Status = OK
		r.Found = key + " not created yet: the agent creates it at first start (mode 0600)"
		return r
	}
	if errors.Is(err, fs.ErrPermission) {
		return env.cannotLook(r, key)
	}
	if err != nil {
		r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("%s: %v", key, pathErr(err)), "check store.key_file"
		return r
	}
	if !fi.Mode().IsRegular() {
		r.Status, r.Found, r.Fix = Fail, key+" is not a regular file", "restore the key file, or correct store.key_file"
		return r
	}
	var problems, fixes []string
	status := OK
	mode := fi.Mode().Perm()
	if modeChecks && mode != 0o600 {
		status = Fail
		problems = append(problems, fmt.Sprintf("mode %04o, want 0600 (only the agent may read it)", mode))
		fixes = append(fixes, "chmod 600 "+key)
	}
	if err := store.CheckKeyFile(fi); err != nil {
		status = Fail
		problems = append(problems, err.Error())
		fixes = append(fixes, "restore "+key+" from a backup")
	}
	ownerNote := ""
	if uid, _, ok := fileOwner(fi); ok && env.owner.known {
		ownerNote = ", owner " + userName(uid)
		if uid != env.owner.uid {
			who := env.owner.name
			if env.owner.service {
				who = "the service user " + who
			}
			if env.owner.uid == 0 {
				// Root reads it anyway, but its owner could change it.
				if status == OK {
					status = Warn
				}
				problems = append(problems, fmt.Sprintf("owned by %s, not %s", userName(uid), who))
			} else {
				status = Fail
				problems = append(problems, fmt.Sprintf("owned by %s: %s cannot read it", userName(uid), who))
			}
			fixes = append(fixes, fmt.Sprintf("chown %s: %s", env.owner.name, key))
		}
	}
	r.Status = status
	if len(problems) == 0 {
		r.Found = fmt.Sprintf("%s: mode %04o%s", key, mode, ownerNote)
		return r
	}
	r.Found = key + ": " + strings.Join(problems, "; ")
	r.Fix = strings.Join(fixes, " && ")
	return r
}
