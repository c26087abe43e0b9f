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
	caddy.RegisterModule(APIKeyGate{})
}

// APIKeyGate is the handler of the apikey_auth directive: it lets a
// request through only with a valid key (else 401), that grants the
// required scopes (else 403), within its plan's rate limits and credits
// (else 429 JSON with Retry-After). Keyed responses carry the RateLimit
// and RateLimit-Policy fields of draft-ietf-httpapi-ratelimit-headers-11
// for the most restrictive of the key's limits.
//
// On success it sets the placeholders of the apikey provider
// ({http.auth.user.id}, source, key_id, key_title, key_scopes) and, for
// keys with a plan, {http.auth.user.ratelimit_remaining} (of the most
// restrictive limit) and {http.auth.user.credits_remaining}, which
// reverse_proxy can forward upstream.
type APIKeyGate struct {
	APIKeyAuth

	// Scopes the key must all grant; else 403 with a Bearer
	// insufficient_scope challenge.
	RequireScopes []string `json:"require_scopes,omitempty"`

	// Credits a request on this route spends, when the key's plan has
	// credits; 0 makes the route free. Default: 1.
	Cost *int64 `json:"cost,omitempty"`

	cost           int64
	scopeChallenge string
}

// CaddyModule returns the Caddy module information.
func (APIKeyGate) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikey_auth",
		New: func() caddy.Module { return new(APIKeyGate) },
	}
}

// Provision connects the handler to the apikeys app.
func (g *APIKeyGate) Provision(ctx caddy.Context) error {
	if err := g.APIKeyAuth.Provision(ctx); err != nil {
		return err
	}
	g.cost = 1
	if g.Cost != nil {
		if *g.Cost < 0 {
			return errors.New("cost must not be negative")
		}
		g.cost = *g.Cost
	}
	for _, s := range g.RequireScopes {
		if err := keystore.CheckScope(s); err != nil {
			return err
		}
	}
	g.scopeChallenge = fmt.Sprintf(`Bearer realm=%q, error="insufficient_scope", scope=%q`,
		strings.ReplaceAll(g.Realm, `"`, ``), strings.Join(g.RequireScopes, " "))
	return nil
}

// ServeHTTP checks the key, its scopes and its limits, then passes the
// request on.
func (g *APIKeyGate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	k, err := g.check(w, r)
	if err != nil {
		// The store cannot tell: refused, as a key it does not know.
		g.logger.Error("key store failure while checking a key", zapError(err))
		k = nil
	}
	if k == nil {
		return caddyhttp.Error(http.StatusUnauthorized, errors.New("not authenticated"))
	}
	for _, want := range g.RequireScopes {
		if !slices.Contains(k.Scopes, want) {
			g.app.metrics.insufficientScope.Inc()
			w.Header().Set("WWW-Authenticate", g.scopeChallenge)
			return caddyhttp.Error(http.StatusForbidden, fmt.Errorf("API key lacks scope %q", want))
		}
	}
	v, err := k.Limits().Take(r.Context(), g.cost)
	if err != nil {
		g.logger.Error("key store failure while charging credits", zapError(err))
		return writeError(w, http.StatusServiceUnavailable, "the key store is unavailable; try again later")
	}
	writeRateLimitFields(w.Header(), v)
	if !v.Allowed {
		g.app.metrics.countLimited(v)
		return writeLimited(w, v)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	// Answered when asked (an access log's user_id, a header_up), from
	// values built once per key: nothing is copied per request.
	repl.Map(keyPlaceholderFunc(k))
	if k.Limits() == nil {
		return next.ServeHTTP(w, r)
	}
	if v.Remaining >= 0 {
		repl.Set("http.auth.user.ratelimit_remaining", v.Remaining)
	}
	if v.Credits < 0 || g.cost == 0 {
		return next.ServeHTTP(w, r)
	}
	repl.Set("http.auth.user.credits_remaining", v.Credits)
	// The credits are spent once the response is complete, before the
	// server flushes what is left of it: a request the gateway never
	// answers (the upstream unreachable, the gateway killed on the way)
	// spends nothing, and its client may retry.
	settled := false
	defer func() {
		if !settled { // a handler after this one panicked
			v.Charge.Cancel()
		}
	}()
	err = next.ServeHTTP(w, r)
	settled = true
	if err != nil {
		v.Charge.Cancel()
		return err
	}
	v.Charge.Commit()
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*APIKeyGate)(nil)
	_ caddyhttp.MiddlewareHandler = (*APIKeyGate)(nil)
)
