package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect/passport"
)

// identityKey looks at the call-signing key the way the agent will load it
// (passport.LoadKey): present (or to be made at first start), mode 0600, a
// P-256 key; and warns when calls go out unsigned.
type identityKey struct{}

func (identityKey) Name() string { return "identity key" }

func (c identityKey) Run(_ context.Context, env *Env) []Result { return []Result{c.check(env)} }

func (identityKey) check(env *Env) Result {
	var r Result
	path := filepath.Join(abs(env.Config.DataDir), agent.IdentityKeyFile)
	k, err := passport.LoadKey(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Status = OK
		r.Found = path + " not created yet: the agent creates it at first start (mode 0600); `leadport-agent identity` then prints what the platform enrols"
		return r
	case errors.Is(err, fs.ErrPermission):
		return env.cannotLook(r, path)
	case errors.Is(err, passport.ErrKeyPermissions):
		r.Status, r.Found, r.Fix = Fail, err.Error(), "chmod 600 "+path
		return r
	case err != nil:
		r.Status, r.Found = Fail, err.Error()
		r.Fix = fmt.Sprintf("move %s aside: the agent makes a new key at its next start, which the platform must enrol again (leadport-agent identity)", path)
		return r
	}
	id := agent.IdentityOf(env.Config.DeviceID, k)
	r.Status = OK
	r.Found = fmt.Sprintf("%s: %s key %s, created %s", path, id.Alg, id.KeyID, date(id.CreatedAt))
	if env.Config.SIP.Identity == config.IdentityOff {
		r.Status = Warn
		r.Found += "; sip.identity is off: calls go out unsigned and an edge that verifies refuses them"
		r.Fix = "set sip.identity: sign once the platform has enrolled this key"
	}
	return r
}
