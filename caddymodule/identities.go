package caddymodule

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
)

// identitySources loads the app's further identity sources, modules of
// the apikeys.identities namespace. A module is an identity.Source (and
// may be a caddy.Provisioner); it is added to the Caddyfile with
// `identity <name> { … }` in the apikeys block when it implements
// caddyfile.Unmarshaler. Each kind of credential has one source: one
// that a built-in source (the password users; the jwt issuers when any
// are configured) or another module already checks is refused.
func (a *App) identitySources(ctx caddy.Context, builtin []identity.Source) ([]identity.Source, error) {
	if len(a.IdentitiesRaw) == 0 {
		return nil, nil
	}
	mods, err := ctx.LoadModule(a, "IdentitiesRaw")
	if err != nil {
		return nil, fmt.Errorf("loading identity sources: %w", err)
	}
	taken := map[identity.Kind]string{identity.KindAPIKey: "nothing (API keys never sign in)"}
	for _, s := range builtin {
		taken[s.Kind()] = "a built-in source"
	}
	var out []identity.Source
	for i, m := range mods.([]any) {
		s, ok := m.(identity.Source)
		if !ok {
			return nil, fmt.Errorf("identity source %d (%T) is not an identity.Source", i, m)
		}
		if by, dup := taken[s.Kind()]; dup {
			return nil, fmt.Errorf("identity source %d (%s) checks %s credentials, which %s checks already", i, m.(caddy.Module).CaddyModule().ID, s.Kind(), by)
		}
		taken[s.Kind()] = string(m.(caddy.Module).CaddyModule().ID)
		out = append(out, s)
	}
	return out, nil
}
