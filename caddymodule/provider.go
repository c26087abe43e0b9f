package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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
// owner still exists. On success {http.auth.user.id} is the name of the
// key's owner and {http.auth.user.source} where that name comes from
// ("password" for password users, "service" for operator-made owners, or
// a token issuer's namespace, "jwt:<issuer>" by default): the same name
// from two sources is two different owners. {http.auth.user.key_id} is
// the key's id, {http.auth.user.key_title} its title and
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
	// requests when no header or query parameter carries a key. The body
	// is read up to max_body_bytes and then passed upstream unchanged.
	// Default: false.
	Body bool `json:"body,omitempty"`

	// Largest body read when body is on, in bytes. Default: 65536.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`

	// Forward the presented key upstream. By default the header or query
	// parameter that carried it is removed before the request goes on.
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

// Authenticate admits the request if it carries a valid key. A missing or
// refused key is (false, nil): errors are only for store faults.
func (p *APIKeyAuth) Authenticate(w http.ResponseWriter, r *http.Request) (caddyauth.User, bool, error) {
	presented, strip := p.findKey(r)
	if presented == "" {
		w.Header().Set("WWW-Authenticate", p.challenge)
		return caddyauth.User{}, false, nil
	}
	k, err := p.app.keyring.Verify(r.Context(), presented)
	if err != nil {
		w.Header().Set("WWW-Authenticate", p.challenge+`, error="invalid_token"`)
		if isRefusal(err) {
			p.app.metrics.countRefusal(err)
			return caddyauth.User{}, false, nil
		}
		return caddyauth.User{}, false, err
	}
	p.app.metrics.valid.Inc()
	if strip != nil && !p.KeepCredentials {
		strip(r)
	}
	return caddyauth.User{
		ID:       k.Owner.Name,
		Metadata: k.Attributes(),
	}, true, nil
}

func isRefusal(err error) bool {
	return errors.Is(err, keystore.ErrMalformedKey) || errors.Is(err, keystore.ErrNotFound) ||
		errors.Is(err, keystore.ErrExpired) || errors.Is(err, keystore.ErrDisabled) ||
		errors.Is(err, keystore.ErrOrphaned)
}

// findKey returns the presented key, and a function that removes it from
// the request (nil when it cannot be removed, as from a body).
func (p *APIKeyAuth) findKey(r *http.Request) (string, func(*http.Request)) {
	if tok, ok := bearerToken(r); ok {
		return tok, func(r *http.Request) { r.Header.Del("Authorization") }
	}
	for _, name := range p.Headers {
		if v := r.Header.Get(name); v != "" {
			return strings.TrimSpace(v), func(r *http.Request) { r.Header.Del(name) }
		}
	}
	if p.QueryParam != "" {
		q := r.URL.Query()
		if v := q.Get(p.QueryParam); v != "" {
			return v, func(r *http.Request) {
				q.Del(p.QueryParam)
				r.URL.RawQuery = q.Encode()
				r.RequestURI = r.URL.RequestURI()
			}
		}
	}
	if p.Body {
		return p.keyFromBody(r), nil
	}
	return "", nil
}

// keyFromBody reads {"auth": {"api_key": …}} from a JSON body and puts
// the body back so the upstream receives it whole.
func (p *APIKeyAuth) keyFromBody(r *http.Request) string {
	if r.Body == nil || r.Body == http.NoBody || !isJSON(r.Header.Get("Content-Type")) {
		return ""
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, p.MaxBodyBytes+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if err != nil || int64(len(buf)) > p.MaxBodyBytes {
		return ""
	}
	var body struct {
		Auth struct {
			APIKey string `json:"api_key"`
		} `json:"auth"`
	}
	if json.Unmarshal(buf, &body) != nil {
		return ""
	}
	return body.Auth.APIKey
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
	auth := r.Header.Get("Authorization")
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
