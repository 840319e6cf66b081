package doctor

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/leadport/leadport-agent/agent/config"
)

// exampleKeys are the illustration keys of packaging/leadport-agent.example.yaml:
// their private halves were thrown away, so a config that still carries them
// cannot verify any real command.
var exampleKeys = []string{
	"CcsHNEeHC3PBxLud1qT2mbZdYSICm97wApIea7GtaJE=",
	"gIZhFipXSeny0DMs71JfNuFUYoXcPs_ECFzpPnGelGA",
}

// trustedKeys checks that signed commands can be verified: some keys, and
// not the example file's.
type trustedKeys struct{}

func (trustedKeys) Name() string { return "trusted keys" }

func (trustedKeys) Run(_ context.Context, env *Env) []Result {
	var r Result
	keys := env.Config.Commands.TrustedKeys
	if len(keys) == 0 {
		r.Status = Fail
		r.Found = "none: signed commands cannot be verified (erase, export and policy are all rejected)"
		r.Fix = "add the keys Leadport gives you under commands.trusted_keys (key id: base64 Ed25519 public key)"
		return []Result{r}
	}
	kids := slices.Sorted(maps.Keys(keys))
	var examples []string
	for _, kid := range kids {
		for _, ex := range exampleKeys {
			if b, err := decodeKey(ex); err == nil && string(b) == string(keys[kid]) {
				examples = append(examples, kid)
			}
		}
	}
	if len(examples) > 0 {
		r.Status = Warn
		r.Found = fmt.Sprintf("%s: the example file's illustration keys, which no real command is signed with", strings.Join(examples, ", "))
		r.Fix = "replace them with the keys Leadport gives you under commands.trusted_keys"
		return []Result{r}
	}
	r.Status = OK
	r.Found = fmt.Sprintf("%d key%s: %s", len(kids), plural(len(kids)), strings.Join(kids, ", "))
	return []Result{r}
}

// decodeKey reads base64 as config does (standard or URL-safe, padding
// optional).
func decodeKey(s string) ([]byte, error) {
	c, err := config.Parse("", []byte("commands: {trusted_keys: {k: \""+s+"\"}}\n"))
	if err != nil {
		return nil, err
	}
	return c.Commands.TrustedKeys["k"], nil
}
