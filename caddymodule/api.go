package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/presented"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

func init() {
	caddy.RegisterModule(APIHandler{})
}

// Defaults of APIHandler.
const (
	DefaultPathPrefix   = "/api"
	DefaultMaxBodyBytes = 64 << 10
)

// APIHandler serves the key owners' four endpoints, QueryLake-compatible:
// POST <path_prefix>/create_api_key, <path_prefix>/fetch_api_keys,
// <path_prefix>/delete_api_key and <path_prefix>/rotate_api_key. Requests
// for other paths go to the next handler. The caller proves who it is with
// "auth" in the JSON body (an OAuth2 JWT string, or {"username",
// "password"}), or, when the body has none, with an Authorization header
// (Basic or Bearer JWT). API keys are refused here: a leaked key must not
// be able to mint more.
type APIHandler struct {
	// Path under which the endpoints live. Default: "/api".
	PathPrefix string `json:"path_prefix,omitempty"`

	// Largest request body accepted, in bytes; larger ones get 413.
	// Default: 65536.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`

	// Origins whose browser pages may call the endpoints (CORS), e.g.
	// ["https://app.example.com"]; "*" allows any origin. Default: none,
	// so browsers refuse cross-origin calls.
	CORSOrigins []string `json:"cors_origins,omitempty"`

	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (APIHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikeys_api",
		New: func() caddy.Module { return new(APIHandler) },
	}
}

// Provision connects the handler to the apikeys app.
func (h *APIHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.PathPrefix == "" {
		h.PathPrefix = DefaultPathPrefix
	}
	h.PathPrefix = strings.TrimSuffix(h.PathPrefix, "/")
	if h.MaxBodyBytes <= 0 {
		h.MaxBodyBytes = DefaultMaxBodyBytes
	}
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	h.app = app
	return nil
}

// ServeHTTP answers the endpoints and passes anything else on.
func (h *APIHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	endpoint, ok := strings.CutPrefix(r.URL.Path, h.PathPrefix+"/")
	if !ok {
		return next.ServeHTTP(w, r)
	}
	switch endpoint {
	case "create_api_key":
		return h.serve(w, r, h.createAPIKey)
	case "fetch_api_keys":
		return h.serve(w, r, h.fetchAPIKeys)
	case "delete_api_key":
		return h.serve(w, r, h.deleteAPIKey)
	case "rotate_api_key":
		return h.serve(w, r, h.rotateAPIKey)
	}
	return next.ServeHTTP(w, r)
}

// serve runs one endpoint: method and body checks, then fn, then the
// JSON answer. Errors that are not *wire.Errors are store faults: they
// are logged and answered with 503 and no detail.
func (h *APIHandler) serve(w http.ResponseWriter, r *http.Request, fn func(*http.Request, *requestBody) (any, error)) error {
	corsOK := h.allowCORS(w, r)
	if r.Method == http.MethodOptions && corsOK && r.Header.Get("Access-Control-Request-Method") != "" {
		hdr := w.Header()
		hdr.Set("Access-Control-Allow-Methods", http.MethodPost)
		hdr.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		hdr.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return wire.WriteError(w, wire.Fail(http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed; use POST"))
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !presented.IsJSON(ct) {
		return wire.WriteError(w, wire.Fail(http.StatusUnsupportedMediaType, "Content-Type must be application/json, not "+strconv.Quote(ct)))
	}
	body, err := h.readBody(w, r)
	if err == nil {
		var result any
		if result, err = fn(r, body); err == nil {
			if result == nil {
				// QueryLake answers a bare True this way.
				return wire.WriteJSON(w, http.StatusOK, wire.Done{Success: true})
			}
			return wire.WriteJSON(w, http.StatusOK, wire.Success{Success: true, Result: result})
		}
	}
	var refused *wire.Error
	if errors.As(err, &refused) {
		return wire.WriteError(w, refused)
	}
	h.logger.Error("key store failure", zap.String("endpoint", r.URL.Path), zap.Error(err))
	return wire.WriteError(w, wire.Unavailable)
}

// requestBody holds the members the endpoints read; others are ignored,
// as QueryLake ignores them. Members stay raw until an endpoint reads
// them, so that a wrong type gets a message naming the member.
type requestBody struct {
	Auth         json.RawMessage
	Title        json.RawMessage
	APIKeyID     json.RawMessage
	GraceSeconds json.RawMessage
	ExpiresIn    json.RawMessage
	Scopes       json.RawMessage
}

// bodyMember is a member of a request body by its name in the API.
type bodyMember struct {
	name string
	dst  *json.RawMessage
}

// members names each of b's fields as the API does: the one definition of
// the bodies' shape.
func (b *requestBody) members() [6]bodyMember {
	return [...]bodyMember{{"auth", &b.Auth}, {"title", &b.Title}, {"api_key_id", &b.APIKeyID},
		{"grace_seconds", &b.GraceSeconds}, {"expires_in", &b.ExpiresIn}, {"scopes", &b.Scopes}}
}

// set keeps m if it is one of b's members, matched as encoding/json
// matches names to fields (in any letter case).
func (b *requestBody) set(m strictjson.Member) {
	for _, f := range b.members() {
		if bytes.EqualFold(m.Name, []byte(f.name)) {
			*f.dst = m.Value
			return
		}
	}
}

func (h *APIHandler) readBody(w http.ResponseWriter, r *http.Request) (*requestBody, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, wire.Fail(http.StatusRequestEntityTooLarge, "request body is larger than the limit of "+strconv.FormatInt(h.MaxBodyBytes, 10)+" bytes")
	}
	if err != nil {
		return nil, wire.Fail(http.StatusBadRequest, "could not read the request body")
	}
	return decodeRequestBody(data)
}

// allowCORS adds CORS headers when the request's Origin is allowed, and
// reports whether it is.
func (h *APIHandler) allowCORS(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(h.CORSOrigins) == 0 {
		return false
	}
	w.Header().Add("Vary", "Origin")
	if !slices.Contains(h.CORSOrigins, origin) && !slices.Contains(h.CORSOrigins, "*") {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	return true
}

// decodeRequestBody parses an endpoint's body: a JSON object, or nothing.
// It is read once, by the strict reader: no member twice (in any letter
// case), valid UTF-8.
func decodeRequestBody(data []byte) (*requestBody, error) {
	var body requestBody
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return &body, nil
	}
	if data[0] != '{' {
		return nil, wire.Fail(http.StatusBadRequest, "request body must be a JSON object")
	}
	if err := strictjson.Object(data, body.set); err != nil {
		return nil, wire.Fail(http.StatusBadRequest, describeJSON("request body", err))
	}
	return &body, nil
}

// describeJSON is a strict reader's refusal of what, as the caller sees
// it.
func describeJSON(what string, err error) string {
	var se *strictjson.Error
	if errors.As(err, &se) {
		return se.Describe(what)
	}
	return what + " is not valid JSON"
}

// title returns the requested title, or "" for the default.
func (b *requestBody) title() (string, error) {
	t, _, err := stringField("title", b.Title)
	return t, err
}

// caller authenticates the caller and returns who it is. A body "auth"
// wins over an Authorization header.
func (h *APIHandler) caller(r *http.Request, b *requestBody, refusal string) (identity.Identity, error) {
	cred, err := h.credential(r, b)
	if err != nil {
		return identity.Identity{}, err
	}
	if cred.Kind == identity.KindAPIKey {
		h.app.metrics.credentialFailures.WithLabelValues(cred.Kind.String()).Inc()
		return identity.Identity{}, wire.Fail(http.StatusForbidden, refusal)
	}
	id, err := h.app.verifier.Authenticate(r.Context(), cred, clientIP(r))
	if err == nil && id.FromToken {
		// A token filed under the password users must name one.
		if err = h.app.keyring.CheckActor(r.Context(), id.Actor()); errors.Is(err, keystore.ErrUnknownOwner) {
			h.app.metrics.credentialFailures.WithLabelValues(cred.Kind.String()).Inc()
			return identity.Identity{}, wire.Fail(http.StatusUnauthorized, "the token's user "+id.Owner.String()+" is not a user here")
		}
	}
	if err == nil {
		return id, nil
	}
	return identity.Identity{}, h.refuseCaller(r, cred, err)
}

// refuseCaller turns what authenticating cred failed with into the answer.
func (h *APIHandler) refuseCaller(r *http.Request, cred identity.Credential, err error) error {
	var locked *identity.LockedOutError
	switch {
	case errors.As(err, &locked):
		h.app.metrics.credentialFailures.WithLabelValues(cred.Kind.String()).Inc()
		h.logger.Warn("sign-in refused during lockout", zap.String("remote_addr", r.RemoteAddr))
		return &wire.Error{Status: http.StatusTooManyRequests, Msg: locked.Error(), RetryAfter: locked.RetryAfterSeconds()}
	case errors.Is(err, identity.ErrBusy):
		return &wire.Error{Status: http.StatusServiceUnavailable, Msg: err.Error(), RetryAfter: 1}
	case errors.Is(err, identity.ErrBadCredentials), errors.Is(err, identity.ErrOAuth2Disabled):
		h.app.metrics.credentialFailures.WithLabelValues(cred.Kind.String()).Inc()
		h.logger.Info("credentials refused",
			zap.String("method", cred.Kind.String()),
			zap.String("remote_addr", r.RemoteAddr),
			zap.String("reason", err.Error()))
		return wire.Fail(http.StatusUnauthorized, err.Error())
	}
	return err
}

func (h *APIHandler) credential(r *http.Request, b *requestBody) (identity.Credential, error) {
	if len(b.Auth) > 0 && string(b.Auth) != "null" {
		cred, err := identity.DecodeAuth(b.Auth, h.app.KeyPrefix)
		if err != nil {
			return cred, wire.Fail(http.StatusBadRequest, err.Error())
		}
		return cred, nil
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if user == "" || pass == "" {
			return identity.Credential{}, wire.Fail(http.StatusBadRequest, "Basic credentials need a username and a password")
		}
		if err := keystore.CheckName(user); err != nil {
			return identity.Credential{}, wire.Fail(http.StatusBadRequest, "Basic credentials: username: "+err.Error())
		}
		return identity.Credential{Kind: identity.KindPassword, Username: user, Password: pass}, nil
	}
	if token, ok := presented.Bearer(r.Header.Get("Authorization")); ok {
		raw, _ := json.Marshal(token)
		cred, err := identity.DecodeAuth(raw, h.app.KeyPrefix)
		if err != nil {
			return cred, wire.Fail(http.StatusBadRequest, err.Error())
		}
		return cred, nil
	}
	return identity.Credential{}, wire.Fail(http.StatusUnauthorized,
		`missing "auth": send an OAuth2 token string or {"username": ..., "password": ...}`)
}

// clientIP is the client's address as Caddy determined it (honouring
// trusted_proxies), for lockouts.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Interface guards
var (
	_ caddy.Provisioner           = (*APIHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*APIHandler)(nil)
)
