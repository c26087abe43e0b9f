package caddymodule

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/ops"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves the operator's operations (package ops) on Caddy's
// admin endpoint (localhost:2019 by default) under /apikeys/, for
// `caddy apikeys` and for scripts:
//
//	GET    /apikeys/keys[?<owner>]         list keys (of one owner)
//	POST   /apikeys/keys                   create a key: {<owner>, "title"?, "expires_in"?, "scopes"?, "plan"?}
//	DELETE /apikeys/keys?<owner>           revoke every key of an owner
//	DELETE /apikeys/keys/<id>              revoke a key
//	POST   /apikeys/keys/lookup            find keys by digest: {"hashes"} → [key or null]
//	POST   /apikeys/keys/leaked            revoke leaked keys: {"hashes", "disable_only"?} → [key or null]
//	POST   /apikeys/keys/<id>/disable      disable a key
//	POST   /apikeys/keys/<id>/enable       enable a key
//	PUT    /apikeys/keys/<id>/plan         give a key a plan: {"plan"} ("" for its owner's)
//	GET    /apikeys/keys/<id>/credits      a key's balance
//	PUT    /apikeys/keys/<id>/credits      set it: {"balance"}
//	POST   /apikeys/keys/<id>/credits      add to it: {"add"} (negative takes)
//	GET    /apikeys/users                  list stored users
//	POST   /apikeys/users                  add a user: {"username", "password" | "password_hash", "scopes"?, "orphaned_keys"?}
//	PUT    /apikeys/users/<name>/password  set a password: {"password" | "password_hash"}
//	PUT    /apikeys/users/<name>/scopes    set the scopes a user may give keys: {"scopes"}
//	PUT    /apikeys/users/<name>/plan      set the plan of a user's keys: {"plan"}
//	DELETE /apikeys/users/<name>           remove a user and revoke their keys
//	GET    /apikeys/backup                 a consistent backup of the store (a bbolt file)
//
// An owner is "user" (a password user), "service" (an operator-made
// owner), or "user" with "source" (e.g. a token identity, "source":
// "jwt:https://idp.example"), as JSON members or query parameters. Path
// segments are URL-escaped, so any user name can be managed. Bodies are
// read by the strict reader; errors name the member as the API does.
//
// It acts on the apikeys app of the running config, and answers 503 when
// that config has none.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.apikeys",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: ops.Prefix, Handler: caddy.AdminHandlerFunc(serveAdmin)}}
}

func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	app, err := caddy.ActiveContext().AppIfConfigured("apikeys")
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("the running config has no apikeys app")}
	}
	a := app.(*App)
	env := &ops.Env{Keyring: a.keyring, Audit: a.audit, Counters: a.metrics, Via: "admin_api", Remote: r.RemoteAddr, Publish: a.publish}
	err = ops.Serve(w, r, env)
	var refused *wire.Error
	var cut *ops.CutShortError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &cut):
		a.logger.Warn("admin API: a backup was cut short", zap.String("remote_addr", r.RemoteAddr), zap.Error(cut.Err))
		return nil // its answer has begun: nothing else can be sent
	case errors.As(err, &refused):
		return caddy.APIError{HTTPStatus: refused.Status, Err: refused}
	}
	a.logger.Error("admin API: key store failure", zap.Error(err))
	return caddy.APIError{HTTPStatus: wire.Unavailable.Status, Err: wire.Unavailable}
}

// Interface guard
var _ caddy.AdminRouter = (*AdminAPI)(nil)
