package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(VerifyHandler{})
}

// VerifyHandler is the handler of the apikeys_verify directive: the key
// authority that other proxies ask, by the sub-request protocols of
// Caddy's forward_auth, nginx's auth_request, Traefik's forwardAuth and
// Envoy's HTTP ext_authz. It reads the key from the client's request as
// the proxy forwards it (its header fields, and the query of the
// forwarded URI; see VerifyRules and forwarded.go), admits it exactly as
// apikey_auth does, and answers 200 with an empty body and the identity
// fields (X-Apikeys-User, X-Apikeys-Source, X-Apikeys-Key-Id,
// X-Apikeys-Scopes, X-Apikeys-Ratelimit-Remaining,
// X-Apikeys-Credits-Remaining) and RateLimit fields for the proxy to copy.
// It refuses as apikey_auth does, 401, 403 or 429 with WWW-Authenticate,
// Retry-After and the RateLimit fields, as errors for the server's error
// routes; a forwarded request it cannot read is refused with 400. No
// answer holds the key. It ends the route: nothing after it runs.
type VerifyHandler struct {
	VerifyRules

	verifier *verifier
}

// CaddyModule returns the Caddy module information.
func (VerifyHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikeys_verify",
		New: func() caddy.Module { return new(VerifyHandler) },
	}
}

// Provision connects the handler to the apikeys app.
func (h *VerifyHandler) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	h.verifier, err = newVerifier(ctx, app, ctx.Logger(), h.VerifyRules)
	return err
}

// ServeHTTP answers whether the forwarded request may pass.
func (h *VerifyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	q, err := askedOver(r)
	if err != nil {
		return refuse(http.StatusBadRequest, msgForwardedMalformed)
	}
	a, err := h.verifier.decide(r.Context(), hdr, q)
	if err != nil {
		return err
	}
	writeIdentity(hdr, a)
	w.WriteHeader(http.StatusOK)
	return nil
}

// msgForwardedMalformed refuses a sub-request whose forwarded method or
// URI cannot be read.
const msgForwardedMalformed = "the forwarded request's method or URI is malformed or given twice"

// Interface guards
var (
	_ caddy.Provisioner           = (*VerifyHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*VerifyHandler)(nil)
)
