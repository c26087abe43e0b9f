package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func init() {
	caddy.RegisterModule(APIKeyAuth{})
}

// Default realm announced in WWW-Authenticate.
const DefaultRealm = "apikeys"

// APIKeyAuth is an authentication provider that admits requests carrying
// a valid, unexpired, enabled API key minted by the apikeys app, whose
// owner still exists. Every place it reads a key from is read: a request
// carrying two different keys (in two places, or twice in one) is
// refused. On success {http.auth.user.id} is the name of the key's owner
// and {http.auth.user.source} where that name comes from ("password" for
// password users, "service" for operator-made owners, or a token issuer's
// namespace, "jwt:<issuer>" by default): the same name from two sources
// is two different owners. {http.auth.user.key_id} is the key's id,
// {http.auth.user.key_title} its title and
// {http.auth.user.key_scopes} its scopes, separated by spaces. Use it with the
// apikey_auth directive, or as a provider of the authentication handler.
type APIKeyAuth struct {
	// Header fields to read a key from, besides "Authorization: Bearer",
	// which is always read; e.g. ["X-Api-Key"]. A field's whole value is
	// the key.
	Headers []string `json:"headers,omitempty"`

	// Name of a query parameter to read a key from. Off by default: URLs
	// are written to access logs and browser histories.
	QueryParam string `json:"query_param,omitempty"`

	// Read a QueryLake-style body {"auth": {"api_key": "sk-…"}} from JSON
	// requests. The body is read up to max_body_bytes and then passed
	// upstream unchanged; one that repeats a member name (in any letter
	// case) is refused. Default: false.
	Body bool `json:"body,omitempty"`

	// Largest body read when body is on, in bytes. Default: 65536.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`

	// Forward the presented key upstream. Default: false. (The header or
	// query parameter that carried the key is removed before the request
	// goes on.)
	KeepCredentials bool `json:"keep_credentials,omitempty"`

	// Realm announced in the WWW-Authenticate challenge. Default: "apikeys".
	Realm string `json:"realm,omitempty"`

	app       *App
	logger    *zap.Logger
	challenge string
}

// CaddyModule returns the Caddy module information.
func (APIKeyAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.authentication.providers.apikey",
		New: func() caddy.Module { return new(APIKeyAuth) },
	}
}

// Provision connects the provider to the apikeys app.
func (p *APIKeyAuth) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	if p.MaxBodyBytes <= 0 {
		p.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if p.Realm == "" {
		p.Realm = DefaultRealm
	}
	if len(p.Headers) > 64 {
		return errors.New("at most 64 header fields may carry a key")
	}
	for i, h := range p.Headers {
		p.Headers[i] = http.CanonicalHeaderKey(h)
	}
	p.challenge = `Bearer realm="` + strings.ReplaceAll(p.Realm, `"`, ``) + `"`
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	p.app = app
	return nil
}

// Authenticate admits the request if it carries a valid key within its
// plan's limits (spending 1 credit). A missing or refused key is (false,
// nil): errors are only for store faults. Over its limits, the request is
// refused here like a bad key (401, with Retry-After); the apikey_auth
// handler answers 429, with the RateLimit fields, and knows route costs.
func (p *APIKeyAuth) Authenticate(w http.ResponseWriter, r *http.Request) (caddyauth.User, bool, error) {
	k, err := p.check(w, r)
	if k == nil || err != nil {
		return caddyauth.User{}, false, err
	}
	// The authentication handler cannot see the response: the credit is
	// spent now.
	v, err := k.Limits().Spend(r.Context(), 1)
	if err != nil {
		return caddyauth.User{}, false, err
	}
	if !v.Allowed {
		p.app.metrics.countLimited(v)
		if v.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(v.RetryAfter), 10))
		}
		return caddyauth.User{}, false, nil
	}
	return caddyauth.User{
		ID:       k.Owner.Name,
		Metadata: keyMetadata(k),
	}, true, nil
}

// check finds and verifies the request's key, and strips it unless
// keep_credentials. A missing or refused key is (nil, nil), with the
// challenge set; an error is a store fault.
func (p *APIKeyAuth) check(w http.ResponseWriter, r *http.Request) (*keystore.Key, error) {
	presented, at, conflict := p.findKey(r)
	if conflict {
		// Two places disagree: whichever the gateway checked, the upstream
		// might read the other.
		w.Header().Set("WWW-Authenticate", p.challenge+`, error="invalid_request"`)
		p.app.metrics.conflicting.Inc()
		return nil, nil
	}
	if presented == "" {
		w.Header().Set("WWW-Authenticate", p.challenge)
		return nil, nil
	}
	k, err := p.app.keyring.VerifyWithin(r.Context(), presented, p.app.unknownBudget, clientIP(r))
	if err != nil {
		w.Header().Set("WWW-Authenticate", p.challenge+`, error="invalid_token"`)
		if isRefusal(err) {
			p.app.metrics.countRefusal(err)
			return nil, nil
		}
		return nil, err
	}
	p.app.metrics.valid.Inc()
	if !p.KeepCredentials {
		p.strip(r, at)
	}
	return k, nil
}

func isRefusal(err error) bool {
	return errors.Is(err, keystore.ErrMalformedKey) || errors.Is(err, keystore.ErrNotFound) ||
		errors.Is(err, keystore.ErrExpired) || errors.Is(err, keystore.ErrDisabled) ||
		errors.Is(err, keystore.ErrOrphaned) || errors.Is(err, keystore.ErrOverBudget)
}

// findKey returns the presented key and the places it was found, so that
// it can be removed from every one (a body is passed on as it came).
// Every place is read: a request that carries two different values, in
// two places or twice in one, is a conflict and carries no key. The usual
// request (one key in one place) costs no allocation.
func (p *APIKeyAuth) findKey(r *http.Request) (key string, at keyPlaces, conflict bool) {
	see := func(v string) bool {
		switch {
		case key == "":
			key = v
		case v != key:
			conflict = true
		}
		return !conflict
	}
	for _, v := range r.Header.Values("Authorization") {
		if tok, ok := bearerValue(v); ok {
			if !see(tok) {
				return "", keyPlaces{}, true
			}
			at.auth = true
		}
	}
	for i, name := range p.Headers {
		for _, v := range r.Header.Values(name) {
			if v = strings.TrimSpace(v); v != "" {
				if !see(v) {
					return "", keyPlaces{}, true
				}
				at.headers |= 1 << i
			}
		}
	}
	if p.QueryParam != "" {
		values, rest, ambiguous := queryParam(r.URL.RawQuery, p.QueryParam)
		if ambiguous {
			return "", keyPlaces{}, true
		}
		for _, v := range values {
			if !see(v) {
				return "", keyPlaces{}, true
			}
		}
		if len(values) > 0 {
			at.query, at.rest = true, rest
		}
	}
	if p.Body {
		v, ambiguous := p.keyFromBody(r)
		if ambiguous || v != "" && !see(v) {
			return "", keyPlaces{}, true
		}
	}
	return key, at, false
}

// keyPlaces are where a request carried its key.
type keyPlaces struct {
	auth    bool   // Authorization: Bearer
	headers uint64 // bit i: the provider's header i
	query   bool
	rest    string // the query without the key
}

// strip removes the key from every place it was found.
func (p *APIKeyAuth) strip(r *http.Request, at keyPlaces) {
	if at.auth {
		r.Header.Del("Authorization")
	}
	for i, name := range p.Headers {
		if at.headers&(1<<i) != 0 {
			r.Header.Del(name)
		}
	}
	if at.query {
		r.URL.RawQuery = at.rest
		r.RequestURI = withQuery(r.RequestURI, at.rest)
	}
}

// keyFromBody reads {"auth": {"api_key": …}} from a JSON body and puts
// the body back so the upstream receives it whole. A body whose members
// repeat (in any letter case) is ambiguous: parsers disagree on which
// one counts.
func (p *APIKeyAuth) keyFromBody(r *http.Request) (key string, ambiguous bool) {
	if r.Body == nil || r.Body == http.NoBody || !isJSON(r.Header.Get("Content-Type")) {
		return "", false
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, p.MaxBodyBytes+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if err != nil || int64(len(buf)) > p.MaxBodyBytes {
		return "", false
	}
	return apiKeyInBody(buf)
}

// apiKeyInBody returns body.auth.api_key of a JSON body, if it is a
// string, and whether the body repeats a member name.
func apiKeyInBody(buf []byte) (key string, ambiguous bool) {
	if !json.Valid(buf) {
		return "", false
	}
	if _, dup := duplicateMember(buf); dup {
		return "", true
	}
	var body struct {
		Auth struct {
			APIKey string `json:"api_key"`
		} `json:"auth"`
	}
	if json.Unmarshal(buf, &body) != nil {
		return "", false
	}
	return body.Auth.APIKey, false
}

type readCloser struct {
	io.Reader
	io.Closer
}

func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(strings.ToLower(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	return bearerValue(r.Header.Get("Authorization"))
}

// bearerValue returns the token of an Authorization value "Bearer <token>".
func bearerValue(auth string) (string, bool) {
	const scheme = "bearer "
	if len(auth) <= len(scheme) || !strings.EqualFold(auth[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(auth[len(scheme):])
	return tok, tok != ""
}

// Interface guards
var (
	_ caddy.Provisioner       = (*APIKeyAuth)(nil)
	_ caddyauth.Authenticator = (*APIKeyAuth)(nil)
)
