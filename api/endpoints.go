package api

import (
	"encoding/json"
	"math"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/audit"
	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// MaxGrace is the longest rotation grace period.
const MaxGrace = 30 * 24 * time.Hour

func (s *Server) createAPIKey(r *http.Request, b *requestBody) (any, error) {
	id, err := s.caller(r, b, "API keys cannot be used to create API keys.")
	if err != nil {
		return nil, err
	}
	req, err := keyRequest(b)
	if err != nil {
		return nil, err
	}
	m, err := s.Keyring.Mint(r.Context(), id.Actor(), req)
	if err != nil {
		if reason := keystore.FaultReason(err); reason != "" {
			// The audit trail shows the attempt, and why no key came of it.
			s.Audit.Warn("key not created", audit.OwnerFields(id.Owner, zap.String("reason", reason),
				zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))...)
		}
		return nil, wire.Refusal(err, s.during(false))
	}
	s.count(func(c Counters) { c.Minted(1) })
	s.Audit.Info("key created", audit.OwnerFields(m.Owner, zap.String("key_id", m.ID),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))...)
	return wire.NewCreatedKey(m), nil
}

func (s *Server) fetchAPIKeys(r *http.Request, b *requestBody) (any, error) {
	id, err := s.caller(r, b, "API keys cannot be used to fetch API keys.")
	if err != nil {
		return nil, err
	}
	keys, err := s.Keyring.KeysByOwner(r.Context(), id.Owner)
	if err != nil {
		return nil, err
	}
	views, err := wire.KeyViews(r.Context(), s.Keyring, keys)
	if err != nil {
		return nil, err
	}
	return struct {
		APIKeys []wire.KeyView `json:"api_keys"`
	}{views}, nil
}

func (s *Server) deleteAPIKey(r *http.Request, b *requestBody) (any, error) {
	id, err := s.caller(r, b, "API keys cannot be used to delete API keys.")
	if err != nil {
		return nil, err
	}
	keyID, err := keyIDField(b)
	if err != nil {
		return nil, err
	}
	deleted, err := s.Keyring.Delete(r.Context(), id.Actor(), keyID)
	if err != nil {
		return nil, wire.Refusal(err, s.during(false))
	}
	s.count(func(c Counters) { c.Deleted(1) })
	s.Audit.Info("key deleted", audit.OwnerFields(id.Owner, zap.String("key_id", keyID),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))...)
	s.publish(r.Context(), notify.KeyEvent(notify.KeyRevoked, deleted, "via", "api"))
	return nil, nil
}

func (s *Server) rotateAPIKey(r *http.Request, b *requestBody) (any, error) {
	id, err := s.caller(r, b, "API keys cannot be used to rotate API keys.")
	if err != nil {
		return nil, err
	}
	grace, err := secondsField("grace_seconds", b.GraceSeconds, MaxGrace)
	if err != nil {
		return nil, err
	}
	keyID, err := keyIDField(b)
	if err != nil {
		return nil, err
	}
	next, _, err := s.Keyring.Rotate(r.Context(), id.Actor(), keyID, grace)
	if err != nil {
		return nil, wire.Refusal(err, s.during(true))
	}
	s.count(func(c Counters) { c.Rotated(1) })
	s.count(func(c Counters) { c.Minted(1) })
	s.Audit.Info("key rotated", audit.OwnerFields(id.Owner, zap.String("key_id", keyID),
		zap.String("new_key_id", next.ID), zap.Duration("grace", grace),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))...)
	return wire.NewCreatedKey(next), nil
}

// during says what the refused request was doing, for wire.Refusal.
func (s *Server) during(rotating bool) wire.During {
	return wire.During{Rotating: rotating, MaxKeys: s.Keyring.Policy().MaxKeysPerOwner}
}

// keyIDField reads the required "api_key_id".
func keyIDField(b *requestBody) (string, error) {
	id, ok, err := stringField("api_key_id", b.APIKeyID)
	if err != nil {
		return "", err
	}
	if !ok || id == "" {
		return "", wire.Fail(http.StatusBadRequest, `"api_key_id" is required`)
	}
	return id, nil
}

// keyRequest reads what a create request asks for; the key policy
// decides whether it may have it.
func keyRequest(b *requestBody) (keystore.KeyRequest, error) {
	var req keystore.KeyRequest
	var err error
	if req.Title, err = b.title(); err != nil {
		return req, err
	}
	if len(b.ExpiresIn) > 0 && string(b.ExpiresIn) != "null" {
		if req.Lifetime, err = secondsField("expires_in", b.ExpiresIn, math.MaxInt64); err != nil {
			return req, err
		}
		if req.Lifetime == 0 {
			return req, wire.Fail(http.StatusBadRequest, `"expires_in" must be a positive number of seconds`)
		}
	}
	if len(b.Scopes) > 0 && string(b.Scopes) != "null" {
		var scopes []string // here, so that only a request with scopes allocates it
		if err := json.Unmarshal(b.Scopes, &scopes); err != nil {
			return req, wire.Fail(http.StatusBadRequest, `"scopes" must be a list of strings`)
		}
		req.Scopes = scopes
	}
	return req, nil
}

func stringField(name string, raw json.RawMessage) (string, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	s, err := strictjson.Unquote(raw)
	if err != nil {
		return "", true, wire.Fail(http.StatusBadRequest, `"`+name+`" must be a string`)
	}
	return s, true, nil
}

// secondsField reads a non-negative number of seconds, at most limit.
func secondsField(name string, raw json.RawMessage, limit time.Duration) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var secs float64
	if err := json.Unmarshal(raw, &secs); err != nil {
		return 0, wire.Fail(http.StatusBadRequest, `"`+name+`" must be a non-negative number of seconds`)
	}
	return wire.Seconds(name, secs, limit)
}
