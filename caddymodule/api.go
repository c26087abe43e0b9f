package caddymodule

import (
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
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
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

// apiError is a failure with the status and message the caller sees.
type apiError struct {
	status     int
	msg        string
	retryAfter int // seconds, for 429 and 503
}

func (e *apiError) Error() string { return e.msg }

func fail(status int, msg string) error { return &apiError{status: status, msg: msg} }

// serve runs one endpoint: method and body checks, then fn, then the
// JSON answer. Errors that are not apiErrors are store faults: they are
// logged and answered with 503 and no detail.
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
		return writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed; use POST")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSON(ct) {
		return writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json, not "+strconv.Quote(ct))
	}
	body, err := h.readBody(w, r)
	if err == nil {
		var result any
		if result, err = fn(r, body); err == nil {
			if result == nil {
				// QueryLake answers a bare True this way.
				return writeJSON(w, http.StatusOK, struct {
					Success bool `json:"success"`
				}{true})
			}
			return writeJSON(w, http.StatusOK, successBody{Success: true, Result: result})
		}
	}
	var ae *apiError
	if errors.As(err, &ae) {
		if ae.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(ae.retryAfter))
		}
		return writeError(w, ae.status, ae.msg)
	}
	h.logger.Error("key store failure", zap.String("endpoint", r.URL.Path), zap.Error(err))
	return writeError(w, http.StatusServiceUnavailable, "the key store is unavailable; try again later")
}

// requestBody holds the members the endpoints read; others are ignored,
// as QueryLake ignores them. Members stay raw until an endpoint reads
// them, so that a wrong type gets a message naming the member.
type requestBody struct {
	Auth         json.RawMessage `json:"auth"`
	Title        json.RawMessage `json:"title"`
	APIKeyID     json.RawMessage `json:"api_key_id"`
	GraceSeconds json.RawMessage `json:"grace_seconds"`
	ExpiresIn    json.RawMessage `json:"expires_in"`
	Scopes       json.RawMessage `json:"scopes"`
}

// set keeps the value of the member whose folded name is folded, if it
// is one of b's.
func (b *requestBody) set(folded string, value []byte) {
	switch folded {
	case "AUTH":
		b.Auth = value
	case "TITLE":
		b.Title = value
	case "API_KEY_ID":
		b.APIKeyID = value
	case "GRACE_SECONDS":
		b.GraceSeconds = value
	case "EXPIRES_IN":
		b.ExpiresIn = value
	case "SCOPES":
		b.Scopes = value
	}
}

func (h *APIHandler) readBody(w http.ResponseWriter, r *http.Request) (*requestBody, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, fail(http.StatusRequestEntityTooLarge, "request body is larger than the limit of "+strconv.FormatInt(h.MaxBodyBytes, 10)+" bytes")
	}
	if err != nil {
		return nil, fail(http.StatusBadRequest, "could not read the request body")
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

// decodeRequestBody parses an endpoint's body: a JSON object, or nothing,
// read strictly (readObject).
func decodeRequestBody(data []byte) (*requestBody, error) {
	var body requestBody
	switch fault, name := readObject(data, &body); fault {
	case bodyNotObject:
		return nil, fail(http.StatusBadRequest, "request body must be a JSON object")
	case bodyNotUTF8:
		return nil, fail(http.StatusBadRequest, "request body is not valid UTF-8")
	case bodyNotJSON:
		return nil, fail(http.StatusBadRequest, "request body is not valid JSON")
	case bodyRepeats:
		return nil, fail(http.StatusBadRequest, "request body has the member "+strconv.Quote(name)+" more than once (names match in any letter case)")
	}
	return &body, nil
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
		return identity.Identity{}, fail(http.StatusForbidden, refusal)
	}
	id, err := h.app.verifier.Authenticate(r.Context(), cred, clientIP(r))
	if err == nil && id.FromToken {
		// A token filed under the password users must name one.
		if err = h.app.keyring.CheckActor(r.Context(), id.Actor()); errors.Is(err, keystore.ErrUnknownOwner) {
			h.app.metrics.credentialFailures.WithLabelValues(cred.Kind.String()).Inc()
			return identity.Identity{}, fail(http.StatusUnauthorized, "the token's user "+id.Owner.String()+" is not a user here")
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
		return &apiError{status: http.StatusTooManyRequests, msg: locked.Error(), retryAfter: locked.RetryAfterSeconds()}
	case errors.Is(err, identity.ErrBusy):
		return &apiError{status: http.StatusServiceUnavailable, msg: err.Error(), retryAfter: 1}
	case errors.Is(err, identity.ErrBadCredentials), errors.Is(err, identity.ErrOAuth2Disabled):
		h.app.metrics.credentialFailures.WithLabelValues(cred.Kind.String()).Inc()
		h.logger.Info("credentials refused",
			zap.String("method", cred.Kind.String()),
			zap.String("remote_addr", r.RemoteAddr),
			zap.String("reason", err.Error()))
		return fail(http.StatusUnauthorized, err.Error())
	}
	return err
}

func (h *APIHandler) credential(r *http.Request, b *requestBody) (identity.Credential, error) {
	if len(b.Auth) > 0 && string(b.Auth) != "null" {
		cred, err := identity.DecodeAuth(b.Auth, h.app.KeyPrefix)
		if err != nil {
			return cred, fail(http.StatusBadRequest, err.Error())
		}
		return cred, nil
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if user == "" || pass == "" {
			return identity.Credential{}, fail(http.StatusBadRequest, "Basic credentials need a username and a password")
		}
		if err := keystore.CheckName(user); err != nil {
			return identity.Credential{}, fail(http.StatusBadRequest, "Basic credentials: username: "+err.Error())
		}
		return identity.Credential{Kind: identity.KindPassword, Username: user, Password: pass}, nil
	}
	if token, ok := bearerToken(r); ok {
		raw, _ := json.Marshal(token)
		cred, err := identity.DecodeAuth(raw, h.app.KeyPrefix)
		if err != nil {
			return cred, fail(http.StatusBadRequest, err.Error())
		}
		return cred, nil
	}
	return identity.Credential{}, fail(http.StatusUnauthorized,
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
