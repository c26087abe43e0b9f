package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves key and user management on Caddy's admin endpoint
// (localhost:2019 by default) under /apikeys/, for `caddy apikeys` and
// for scripts:
//
//	GET    /apikeys/keys[?<owner>]         list keys (of one owner)
//	POST   /apikeys/keys                   create a key: {<owner>, "title"?, "expires_in"?, "scopes"?}
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
//	POST   /apikeys/users                  add a user: {"username", "password" | "password_hash", "scopes"?}
//	PUT    /apikeys/users/<name>/password  set a password: {"password" | "password_hash"}
//	PUT    /apikeys/users/<name>/scopes    set the scopes a user may give keys: {"scopes"}
//	PUT    /apikeys/users/<name>/plan      set the plan of a user's keys: {"plan"}
//	DELETE /apikeys/users/<name>           remove a user and revoke their keys
//
// An owner is "user" (a password user), "service" (an operator-made
// owner), or "user" with "source" (e.g. a token identity, "source":
// "jwt:https://idp.example"), as JSON members or query parameters. Path
// segments are URL-escaped, so any user name can be managed.
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
	return []caddy.AdminRoute{{Pattern: "/apikeys/", Handler: caddy.AdminHandlerFunc(serveAdmin)}}
}

// maxAdminBody caps admin request bodies.
const maxAdminBody = 64 << 10

func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	app, err := caddy.ActiveContext().AppIfConfigured("apikeys")
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("the running config has no apikeys app")}
	}
	a := app.(*App)
	op := operator{keyring: a.keyring, audit: a.audit, metrics: a.metrics, via: "admin_api", remote: r.RemoteAddr, publish: a.publish}
	parts, err := pathSegments(r)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	ctx := r.Context()
	q := r.URL.Query()
	queried := ownerRef{User: q.Get("user"), Service: q.Get("service"), Source: q.Get("source")}

	var result any
	switch {
	case match(r, parts, "GET", "keys"):
		result, err = op.listKeys(ctx, queried)
	case match(r, parts, "DELETE", "keys"):
		var n int
		if n, err = op.revokeOwner(ctx, queried); err == nil {
			result = map[string]int{"keys_revoked": n}
		}
	case match(r, parts, "POST", "keys"):
		var req newKeyRequest
		if err = decodeAdminBody(r, &req); err == nil {
			result, err = op.createKey(ctx, req)
		}
	case match(r, parts, "POST", "keys", "lookup"):
		var req hashesRequest
		if err = decodeAdminBody(r, &req); err == nil {
			result, err = op.lookupKeys(ctx, req)
		}
	case match(r, parts, "POST", "keys", "leaked"):
		var req hashesRequest
		if err = decodeAdminBody(r, &req); err == nil {
			result, err = op.reportLeaked(ctx, req)
		}
	case match(r, parts, "DELETE", "keys", "*"):
		err = op.revokeKey(ctx, parts[1])
	case match(r, parts, "POST", "keys", "*", "disable"):
		result, err = op.setDisabled(ctx, parts[1], true)
	case match(r, parts, "POST", "keys", "*", "enable"):
		result, err = op.setDisabled(ctx, parts[1], false)
	case match(r, parts, "PUT", "keys", "*", "plan"):
		var req struct {
			Plan string `json:"plan"`
		}
		if err = decodeAdminBody(r, &req); err == nil {
			result, err = op.setKeyPlan(ctx, parts[1], req.Plan)
		}
	case match(r, parts, "GET", "keys", "*", "credits"):
		result, err = op.credits(ctx, parts[1])
	case match(r, parts, "PUT", "keys", "*", "credits"):
		var req struct {
			Balance *int64 `json:"balance"`
		}
		if err = decodeAdminBody(r, &req); err == nil {
			if req.Balance == nil {
				err = fail(http.StatusBadRequest, `"balance" is required`)
			} else {
				result, err = op.adjustCredits(ctx, parts[1], *req.Balance, true)
			}
		}
	case match(r, parts, "POST", "keys", "*", "credits"):
		var req struct {
			Add int64 `json:"add"`
		}
		if err = decodeAdminBody(r, &req); err == nil {
			result, err = op.adjustCredits(ctx, parts[1], req.Add, false)
		}
	case match(r, parts, "PUT", "users", "*", "plan"):
		var req struct {
			Plan string `json:"plan"`
		}
		if err = decodeAdminBody(r, &req); err == nil {
			result, err = op.setUserPlan(ctx, parts[1], req.Plan)
		}
	case match(r, parts, "GET", "users"):
		result, err = op.listUsers(ctx)
	case match(r, parts, "POST", "users"):
		var req userRequest
		if err = decodeAdminBody(r, &req); err == nil {
			err = op.addUser(ctx, req)
		}
	case match(r, parts, "PUT", "users", "*", "password"):
		var req userRequest
		if err = decodeAdminBody(r, &req); err == nil {
			err = op.setPassword(ctx, parts[1], req)
		}
	case match(r, parts, "PUT", "users", "*", "scopes"):
		var req struct {
			Scopes []string `json:"scopes"`
		}
		if err = decodeAdminBody(r, &req); err == nil {
			result, err = op.setScopes(ctx, parts[1], req.Scopes)
		}
	case match(r, parts, "DELETE", "users", "*"):
		var n int
		if n, err = op.removeUser(ctx, parts[1]); err == nil {
			result = map[string]int{"keys_revoked": n}
		}
	default:
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no route %s %s", r.Method, r.URL.Path)}
	}
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return caddy.APIError{HTTPStatus: ae.status, Err: ae}
		}
		a.logger.Error("admin API: key store failure", zap.Error(err))
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("the key store is unavailable")}
	}
	if result == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return writeJSON(w, http.StatusOK, result)
}

// pathSegments splits the path after /apikeys/ into its segments,
// unescaped one by one, so that a user name may contain "/".
func pathSegments(r *http.Request) ([]string, error) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.EscapedPath(), "/apikeys/"), "/")
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		var err error
		if parts[i], err = url.PathUnescape(p); err != nil {
			return nil, fmt.Errorf("invalid path segment %q", p)
		}
	}
	return parts, nil
}

// match reports whether the request has the method and path segments,
// "*" matching any one non-empty segment.
func match(r *http.Request, parts []string, method string, pattern ...string) bool {
	if r.Method != method || len(parts) != len(pattern) {
		return false
	}
	for i, p := range pattern {
		if parts[i] == "" || (p != "*" && p != parts[i]) {
			return false
		}
	}
	return true
}

// decodeAdminBody reads a request body into v by the strict reader,
// refusing members v does not have; errors name the member as the API
// does.
func decodeAdminBody(r *http.Request, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return fail(http.StatusBadRequest, "could not read the request body")
	}
	if len(data) > maxAdminBody {
		return fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than the limit of %d bytes", maxAdminBody))
	}
	var fe *strictjson.FieldError
	switch err := strictjson.DecodeObject(data, v); {
	case errors.As(err, &fe):
		return fail(http.StatusBadRequest, "request body: "+fe.Error())
	case err != nil:
		return fail(http.StatusBadRequest, describeJSON("request body", err))
	}
	return nil
}

// Interface guard
var _ caddy.AdminRouter = (*AdminAPI)(nil)
