package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func init() {
	caddy.RegisterModule(RequireScopes{})
}

// RequireScopes refuses, with 403 and a Bearer insufficient_scope
// challenge, requests whose API key lacks any of the listed scopes. It
// reads the scopes the apikey provider placed in
// {http.auth.user.key_scopes}, so it belongs right after the
// authentication handler; `apikey_auth { require_scopes … }` puts it
// there.
type RequireScopes struct {
	// Scopes the key must all grant.
	Scopes []string `json:"scopes,omitempty"`

	// Realm announced in the challenge. Default: "apikeys".
	Realm string `json:"realm,omitempty"`

	app       *App
	challenge string
}

// CaddyModule returns the Caddy module information.
func (RequireScopes) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikey_require_scopes",
		New: func() caddy.Module { return new(RequireScopes) },
	}
}

// Provision checks the scope names and connects to the apikeys app.
func (rs *RequireScopes) Provision(ctx caddy.Context) error {
	if len(rs.Scopes) == 0 {
		return errors.New("no scopes to require")
	}
	for _, s := range rs.Scopes {
		if err := keystore.CheckScope(s); err != nil {
			return err
		}
	}
	if rs.Realm == "" {
		rs.Realm = DefaultRealm
	}
	rs.challenge = fmt.Sprintf(`Bearer realm=%q, error="insufficient_scope", scope=%q`,
		strings.ReplaceAll(rs.Realm, `"`, ``), strings.Join(rs.Scopes, " "))
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	rs.app = app
	return nil
}

// ServeHTTP passes the request on only if the key grants every scope.
func (rs *RequireScopes) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	granted, _ := repl.GetString("http.auth.user.key_scopes")
	have := strings.Fields(granted)
	for _, want := range rs.Scopes {
		if !slices.Contains(have, want) {
			rs.app.metrics.insufficientScope.Inc()
			w.Header().Set("WWW-Authenticate", rs.challenge)
			return caddyhttp.Error(http.StatusForbidden, fmt.Errorf("API key lacks scope %q", want))
		}
	}
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*RequireScopes)(nil)
	_ caddyhttp.MiddlewareHandler = (*RequireScopes)(nil)
)
