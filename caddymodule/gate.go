package caddymodule

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/presented"
)

func init() {
	caddy.RegisterModule(APIKeyGate{})
}

// Default realm announced in WWW-Authenticate.
const DefaultRealm = "apikeys"

// APIKeyGate is the handler of the apikey_auth directive, the one place
// where keys are admitted: it lets a request through only with a valid,
// unexpired, enabled API key minted by the apikeys app, whose owner still
// exists (else 401), that grants the required scopes (else 403), within
// its plan's rate limits and credits (else 429 with Retry-After). Its
// refusals are errors for the server's error routes, whose messages need
// no JSON escaping (see refuse).
// Every place it reads a key from is read: a request carrying two
// different keys (in two places, or twice in one) is refused. Keyed
// responses carry the RateLimit and RateLimit-Policy fields of
// draft-ietf-httpapi-ratelimit-headers-11 for the most restrictive of the
// key's limits.
//
// On success {http.auth.user.id} is the name of the key's owner and
// {http.auth.user.source} where that name comes from ("password" for
// password users, "service" for operator-made owners, or a token issuer's
// namespace, "jwt:<issuer>" by default): the same name from two sources
// is two different owners. {http.auth.user.key_id} is the key's id,
// {http.auth.user.key_title} its title and {http.auth.user.key_scopes}
// its scopes, separated by spaces. For keys with a plan,
// {http.auth.user.ratelimit_remaining} is what is left of the most
// restrictive limit and {http.auth.user.credits_remaining} the credits
// left. reverse_proxy can forward them upstream.
type APIKeyGate struct {
	// Header fields to read a key from, besides "Authorization: Bearer",
	// which is always read; e.g. ["X-Api-Key"]. A field's whole value is
	// the key.
	Headers []string `json:"headers,omitempty"`

	// Name of a query parameter to read a key from. Off by default: URLs
	// are written to access logs and browser histories.
	QueryParam string `json:"query_param,omitempty"`

	// Read a QueryLake-style body {"auth": {"api_key": "sk-…"}}. Every
	// request body is then read in full, as strictly as the API reads its
	// own, and passed upstream unchanged; one that cannot be read so is
	// refused rather than passed on unread: over max_body_bytes 413, with
	// a Content-Type other than JSON 415, not a JSON object in valid UTF-8
	// without a repeated member name (in any letter case) 400. Requests
	// without a body pass. Default: false.
	Body bool `json:"body,omitempty"`

	// Largest body read when body is on, in bytes. Default: 65536.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`

	// Forward the presented key upstream. Default: false. (The header or
	// query parameter that carried the key is removed before the request
	// goes on.)
	KeepCredentials bool `json:"keep_credentials,omitempty"`

	// Realm announced in the WWW-Authenticate challenge. Default: "apikeys".
	Realm string `json:"realm,omitempty"`

	// Scopes the key must all grant; else 403 with a Bearer
	// insufficient_scope challenge.
	RequireScopes []string `json:"require_scopes,omitempty"`

	// Credits a request on this route spends, when the key's plan has
	// credits; 0 makes the route free. A request is charged once the
	// upstream starts its answer, however the answer's transfer ends, and
	// not if it is never answered. Default: 1.
	Cost *int64 `json:"cost,omitempty"`

	admission
	places presented.Places
	rule   routeRule
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
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	return g.setUp(app, ctx.Logger())
}

// setUp checks the config and applies its defaults.
func (g *APIKeyGate) setUp(app *App, logger *zap.Logger) error {
	if g.MaxBodyBytes <= 0 {
		g.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if g.Realm == "" {
		g.Realm = DefaultRealm
	}
	headers, err := keyHeaders(g.Headers)
	if err != nil {
		return err
	}
	g.Headers = headers
	g.places = presented.Places{Headers: g.Headers, QueryParam: g.QueryParam, Body: g.Body, MaxBodyBytes: g.MaxBodyBytes}
	g.admission = newAdmission(app, logger, g.Realm)
	g.rule, err = g.newRouteRule(g.RequireScopes, costOr(g.Cost, 1))
	return err
}

// keyHeaders checks and canonicalizes the header fields configured to
// carry a key.
func keyHeaders(headers []string) ([]string, error) {
	if len(headers) > 64 {
		return nil, errors.New("at most 64 header fields may carry a key")
	}
	for i, h := range headers {
		headers[i] = http.CanonicalHeaderKey(h)
	}
	return headers, nil
}

// costOr is *cost, or def when it is not set.
func costOr(cost *int64, def int64) int64 {
	if cost == nil {
		return def
	}
	return *cost
}

// ServeHTTP admits the request's key (see admission), strips it unless
// keep_credentials, then passes the request on. Refusals are errors for
// the server's error routes (see refuse).
func (g *APIKeyGate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	_, k, v, err := g.admitRequest(w, r)
	if err != nil {
		return err
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
	if v.Credits < 0 || g.rule.cost == 0 {
		return next.ServeHTTP(w, r)
	}
	repl.Set("http.auth.user.credits_remaining", v.Credits)
	// Charged if the upstream answers (see charge.go).
	cw := &chargeWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, charge: v.Charge}
	defer cw.settle()
	return next.ServeHTTP(cw, r)
}

// admitRequest finds the request's key and admits it by the gate's rule;
// the key is then stripped from the request unless keep_credentials. With
// body, a body that cannot be read is refused first (see
// presented.Places.Find).
func (g *APIKeyGate) admitRequest(w http.ResponseWriter, r *http.Request) (presented.Found, *keystore.Key, keystore.Verdict, error) {
	found, err := g.places.Find(r)
	if err != nil {
		return found, nil, keystore.Verdict{}, g.refuseFind(w.Header(), err)
	}
	k, v, err := g.admit(r.Context(), w.Header(), found.Key, clientIP(r), &g.rule)
	if found.Key != "" && !g.KeepCredentials {
		g.places.Strip(r, found)
	}
	return found, k, v, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*APIKeyGate)(nil)
	_ caddyhttp.MiddlewareHandler = (*APIKeyGate)(nil)
)
