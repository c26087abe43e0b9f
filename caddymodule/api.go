package caddymodule

import (
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/api"
)

func init() {
	caddy.RegisterModule(APIHandler{})
}

// Defaults of APIHandler.
const (
	DefaultPathPrefix   = "/api"
	DefaultMaxBodyBytes = 64 << 10
)

// APIHandler serves the key owners' four endpoints (package api),
// QueryLake-compatible:
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
	server *api.Server
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
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	return h.setUp(app, ctx.Logger())
}

// setUp applies the defaults and makes the server of the endpoints.
func (h *APIHandler) setUp(app *App, logger *zap.Logger) error {
	h.app, h.logger = app, logger
	if h.PathPrefix == "" {
		h.PathPrefix = DefaultPathPrefix
	}
	h.PathPrefix = strings.TrimSuffix(h.PathPrefix, "/")
	if h.MaxBodyBytes <= 0 {
		h.MaxBodyBytes = DefaultMaxBodyBytes
	}
	h.server = &api.Server{Keyring: app.keyring, Verifier: app.verifier, KeyPrefix: app.KeyPrefix,
		MaxBodyBytes: h.MaxBodyBytes, CORSOrigins: h.CORSOrigins, ClientIP: clientIP,
		Audit: app.audit, Logger: logger, Counters: app.metrics, Publish: app.publish}
	return nil
}

// ServeHTTP answers the endpoints and passes anything else on.
func (h *APIHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	endpoint, ok := strings.CutPrefix(r.URL.Path, h.PathPrefix+"/")
	if !ok || !slices.Contains(api.Endpoints, endpoint) {
		return next.ServeHTTP(w, r)
	}
	return h.server.Serve(w, r, endpoint)
}

// clientIP is the client's address as Caddy determined it (honouring
// trusted_proxies), for lockouts and budgets.
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
