// Package api answers the key owners' endpoints, QueryLake-compatible:
// create_api_key, fetch_api_keys, delete_api_key and rotate_api_key. The
// caller proves who it is with "auth" in the JSON body (an OAuth2 JWT
// string, or {"username", "password"}), or, when the body has none, with
// an Authorization header (Basic or Bearer JWT). API keys are refused
// here: a leaked key must not be able to mint more. Bodies are read once,
// by the strict reader. It has no dependency on Caddy.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
	"github.com/caddy-apikeys/caddy-apikeys/presented"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// Server answers the endpoints for one gateway's keys.
type Server struct {
	// Keyring holds the keys.
	Keyring *keystore.Keyring
	// Verifier says who a caller is.
	Verifier *identity.Verifier
	// KeyPrefix is the prefix of the gateway's keys, to recognise (and
	// refuse) a key sent as a credential.
	KeyPrefix string
	// MaxBodyBytes bounds request bodies; larger ones get 413.
	MaxBodyBytes int64
	// CORSOrigins are the origins whose browser pages may call the
	// endpoints; "*" allows any.
	CORSOrigins []string
	// ClientIP is the client's address of a request, for lockouts.
	ClientIP func(*http.Request) string
	// Audit receives an event for every change; Logger the faults.
	Audit, Logger *zap.Logger
	// Counters count what the endpoints did; nil counts nothing.
	Counters Counters
	// Publish queues notices of what happened to keys; nil sends none.
	Publish func(context.Context, ...notify.Event)
}

// Counters count what the endpoints did, for the gateway's metrics.
type Counters interface {
	Minted(n int)
	Deleted(n int)
	Rotated(n int)
	// CredentialRefused counts a refused credential of kind.
	CredentialRefused(kind identity.Kind)
}

// Endpoints are the names Serve answers, each under the handler's path.
var Endpoints = []string{"create_api_key", "fetch_api_keys", "delete_api_key", "rotate_api_key"}

// Serve answers the endpoint named endpoint (one of Endpoints).
func (s *Server) Serve(w http.ResponseWriter, r *http.Request, endpoint string) error {
	switch endpoint {
	case "create_api_key":
		return s.serve(w, r, s.createAPIKey)
	case "fetch_api_keys":
		return s.serve(w, r, s.fetchAPIKeys)
	case "delete_api_key":
		return s.serve(w, r, s.deleteAPIKey)
	case "rotate_api_key":
		return s.serve(w, r, s.rotateAPIKey)
	}
	return wire.WriteError(w, wire.Fail(http.StatusNotFound, "no endpoint "+endpoint))
}

func (s *Server) refused(kind identity.Kind) {
	if s.Counters != nil {
		s.Counters.CredentialRefused(kind)
	}
}

func (s *Server) count(f func(Counters)) {
	if s.Counters != nil {
		f(s.Counters)
	}
}

func (s *Server) publish(ctx context.Context, events ...notify.Event) {
	if s.Publish != nil {
		s.Publish(ctx, events...)
	}
}

// serve runs one endpoint: method and body checks, then fn, then the
// JSON answer. Errors that are not *wire.Errors are store faults: they
// are logged and answered with 503 and no detail.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, fn func(*http.Request, *requestBody) (any, error)) error {
	corsOK := s.allowCORS(w, r)
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
	body, err := s.readBody(w, r)
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
	s.Logger.Error("key store failure", zap.String("endpoint", r.URL.Path), zap.String("reason", keystore.FaultReason(err)), zap.Error(err))
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

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (*requestBody, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, wire.Fail(http.StatusRequestEntityTooLarge, "request body is larger than the limit of "+strconv.FormatInt(s.MaxBodyBytes, 10)+" bytes")
	}
	if err != nil {
		return nil, wire.Fail(http.StatusBadRequest, "could not read the request body")
	}
	return decodeRequestBody(data)
}

// allowCORS adds CORS headers when the request's Origin is allowed, and
// reports whether it is.
func (s *Server) allowCORS(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(s.CORSOrigins) == 0 {
		return false
	}
	w.Header().Add("Vary", "Origin")
	if !slices.Contains(s.CORSOrigins, origin) && !slices.Contains(s.CORSOrigins, "*") {
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
func (s *Server) caller(r *http.Request, b *requestBody, refusal string) (identity.Identity, error) {
	cred, err := s.credential(r, b)
	if err != nil {
		return identity.Identity{}, err
	}
	if cred.Kind == identity.KindAPIKey {
		s.refused(cred.Kind)
		return identity.Identity{}, wire.Fail(http.StatusForbidden, refusal)
	}
	id, err := s.Verifier.Authenticate(r.Context(), cred, s.ClientIP(r))
	if err == nil && id.FromToken {
		// A token filed under the password users must name one.
		if err = s.Keyring.CheckActor(r.Context(), id.Actor()); errors.Is(err, keystore.ErrUnknownOwner) {
			s.refused(cred.Kind)
			return identity.Identity{}, wire.Fail(http.StatusUnauthorized, "the token's user "+id.Owner.String()+" is not a user here")
		}
	}
	if err == nil {
		return id, nil
	}
	return identity.Identity{}, s.refuseCaller(r, cred, err)
}

// refuseCaller turns what authenticating cred failed with into the answer.
func (s *Server) refuseCaller(r *http.Request, cred identity.Credential, err error) error {
	var locked *identity.LockedOutError
	switch {
	case errors.As(err, &locked):
		s.refused(cred.Kind)
		s.Logger.Warn("sign-in refused during lockout", zap.String("remote_addr", r.RemoteAddr))
		return &wire.Error{Status: http.StatusTooManyRequests, Msg: locked.Error(), RetryAfter: locked.RetryAfterSeconds()}
	case errors.Is(err, identity.ErrBusy):
		return &wire.Error{Status: http.StatusServiceUnavailable, Msg: err.Error(), RetryAfter: 1}
	case errors.Is(err, identity.ErrBadCredentials), errors.Is(err, identity.ErrOAuth2Disabled):
		s.refused(cred.Kind)
		s.Logger.Info("credentials refused",
			zap.String("method", cred.Kind.String()),
			zap.String("remote_addr", r.RemoteAddr),
			zap.String("reason", err.Error()))
		return wire.Fail(http.StatusUnauthorized, err.Error())
	}
	return err
}

func (s *Server) credential(r *http.Request, b *requestBody) (identity.Credential, error) {
	if len(b.Auth) > 0 && string(b.Auth) != "null" {
		cred, err := identity.DecodeAuth(b.Auth, s.KeyPrefix)
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
		cred, err := identity.DecodeAuth(raw, s.KeyPrefix)
		if err != nil {
			return cred, wire.Fail(http.StatusBadRequest, err.Error())
		}
		return cred, nil
	}
	return identity.Credential{}, wire.Fail(http.StatusUnauthorized,
		`missing "auth": send an OAuth2 token string or {"username": ..., "password": ...}`)
}
