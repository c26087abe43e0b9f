package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/presented"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
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

	app            *App
	logger         *zap.Logger
	places         presented.Places
	cost           int64
	challenge      string
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
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	return g.setUp(app, ctx.Logger())
}

// setUp checks the config and applies its defaults.
func (g *APIKeyGate) setUp(app *App, logger *zap.Logger) error {
	g.app, g.logger = app, logger
	if g.MaxBodyBytes <= 0 {
		g.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if g.Realm == "" {
		g.Realm = DefaultRealm
	}
	if len(g.Headers) > 64 {
		return errors.New("at most 64 header fields may carry a key")
	}
	for i, h := range g.Headers {
		g.Headers[i] = http.CanonicalHeaderKey(h)
	}
	g.places = presented.Places{Headers: g.Headers, QueryParam: g.QueryParam, Body: g.Body, MaxBodyBytes: g.MaxBodyBytes}
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
	realm := strings.ReplaceAll(g.Realm, `"`, ``)
	g.challenge = `Bearer realm="` + realm + `"`
	g.scopeChallenge = fmt.Sprintf(`Bearer realm=%q, error="insufficient_scope", scope=%q`,
		realm, strings.Join(g.RequireScopes, " "))
	return nil
}

// ServeHTTP checks the key, its scopes and its limits, then passes the
// request on. Refusals are errors for the server's error routes (see
// refuse).
func (g *APIKeyGate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	k, err := g.check(w, r)
	if err != nil {
		return err
	}
	for _, want := range g.RequireScopes {
		if !slices.Contains(k.Scopes, want) {
			g.app.metrics.insufficientScope.Inc()
			return scopeRefusal(w, g.scopeChallenge, want)
		}
	}
	v, err := k.Limits().Take(r.Context(), g.cost)
	if err != nil {
		g.logger.Error("key store failure while charging credits", zap.String("reason", keystore.FaultReason(err)), zapError(err))
		w.Header().Set("Retry-After", strconv.Itoa(wire.Unavailable.RetryAfter))
		return refuse(http.StatusServiceUnavailable, wire.Unavailable.Msg)
	}
	writeRateLimitFields(w.Header(), v)
	if !v.Allowed {
		g.app.metrics.countLimited(v)
		return limitedRefusal(w, v)
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
	// Charged if the upstream answers (see charge.go).
	cw := &chargeWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, charge: v.Charge}
	defer cw.settle()
	return next.ServeHTTP(cw, r)
}

// check finds and verifies the request's key, and strips it unless
// keep_credentials. A missing or refused key is refused (401, with the
// challenge set); so is a key the store could not look up, which is
// logged. With body, a body that cannot be read is refused first (see
// presented.Places.Find).
func (g *APIKeyGate) check(w http.ResponseWriter, r *http.Request) (*keystore.Key, error) {
	found, err := g.places.Find(r)
	switch {
	case err != nil:
		return nil, g.refuseFind(w, err)
	case found.Key == "":
		w.Header().Set("WWW-Authenticate", g.challenge)
		return nil, refuse(http.StatusUnauthorized, msgKeyRequired)
	}
	k, err := g.app.keyring.VerifyWithin(r.Context(), found.Key, g.app.unknownBudget, clientIP(r))
	if err != nil {
		w.Header().Set("WWW-Authenticate", g.challenge+`, error="invalid_token"`)
		if isRefusal(err) {
			g.app.metrics.countRefusal(err)
		} else {
			// The store cannot tell: refused, as a key it does not know.
			g.logger.Error("key store failure while checking a key", zap.String("reason", keystore.FaultReason(err)), zapError(err))
		}
		return nil, refuse(http.StatusUnauthorized, msgKeyRequired)
	}
	g.app.metrics.valid.Inc()
	if !g.KeepCredentials {
		g.places.Strip(r, found)
	}
	return k, nil
}

// refuseFind refuses a request whose key cannot be taken from it: a body
// the gate cannot read, or two keys. (Apart from check, so that the
// usual request does not pay for errors.As.)
func (g *APIKeyGate) refuseFind(w http.ResponseWriter, err error) error {
	var be *presented.BodyError
	if errors.As(err, &be) {
		return refuse(be.Status, be.Msg)
	}
	// Two keys: whichever the gateway checked, the upstream might read
	// the other.
	w.Header().Set("WWW-Authenticate", g.challenge+`, error="invalid_request"`)
	g.app.metrics.conflicting.Inc()
	return refuse(http.StatusUnauthorized, msgTwoKeys)
}

func isRefusal(err error) bool {
	return errors.Is(err, keystore.ErrMalformedKey) || errors.Is(err, keystore.ErrNotFound) ||
		errors.Is(err, keystore.ErrExpired) || errors.Is(err, keystore.ErrDisabled) ||
		errors.Is(err, keystore.ErrOrphaned) || errors.Is(err, keystore.ErrOverBudget)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*APIKeyGate)(nil)
	_ caddyhttp.MiddlewareHandler = (*APIKeyGate)(nil)
)
