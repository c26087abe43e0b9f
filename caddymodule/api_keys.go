package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Limits on what callers may ask for.
const (
	// MaxGrace is the longest rotation grace period.
	MaxGrace = 30 * 24 * time.Hour
	// MaxScopes is the most scopes one key may carry.
	MaxScopes = 32
	// maxScopeLen is the longest scope name.
	maxScopeLen = 64
)

// createdKey is the create_api_key (and rotate_api_key) result: the key
// itself, then its view, which gives QueryLake's fields in QueryLake's
// order followed by the optional extensions.
type createdKey struct {
	APIKey string `json:"api_key"`
	keyView
}

func newCreatedKey(m keystore.Minted) createdKey {
	return createdKey{APIKey: m.Secret, keyView: newKeyView(m.Key)}
}

// keyView is a key as fetch_api_keys lists it: never the key or its hash.
type keyView struct {
	ID         string        `json:"id"`
	Title      string        `json:"title"`
	Created    epochSeconds  `json:"created"`
	LastUsed   *epochSeconds `json:"last_used"`
	KeyPreview string        `json:"key_preview"`
	Expires    *epochSeconds `json:"expires,omitempty"`
	Scopes     []string      `json:"scopes,omitempty"`
	Disabled   bool          `json:"disabled,omitempty"`
}

func newKeyView(k keystore.Key) keyView {
	return keyView{
		ID:         k.ID,
		Title:      k.Title,
		Created:    epochSeconds(k.Created),
		LastUsed:   optionalEpoch(k.LastUsed),
		KeyPreview: k.Preview,
		Expires:    optionalEpoch(k.Expires),
		Scopes:     k.Scopes,
		Disabled:   k.Disabled,
	}
}

func (h *APIHandler) createAPIKey(r *http.Request, b *requestBody) (any, error) {
	owner, err := h.owner(r, b, "API keys cannot be used to create API keys.")
	if err != nil {
		return nil, err
	}
	opts, err := h.app.mintOptions(b)
	if err != nil {
		return nil, err
	}
	m, err := h.app.keyring.Mint(r.Context(), owner, opts)
	if errors.Is(err, keystore.ErrLimit) {
		return nil, fail(http.StatusConflict, fmt.Sprintf("key limit reached: a user may hold at most %d keys; delete one first", h.app.MaxKeysPerUser))
	}
	if err != nil {
		return nil, err
	}
	h.app.metrics.minted.Inc()
	h.app.audit.Info("key created", zap.String("user", owner), zap.String("key_id", m.ID),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))
	return newCreatedKey(m), nil
}

func (h *APIHandler) fetchAPIKeys(r *http.Request, b *requestBody) (any, error) {
	owner, err := h.owner(r, b, "API keys cannot be used to fetch API keys.")
	if err != nil {
		return nil, err
	}
	keys, err := h.app.keyring.KeysByOwner(r.Context(), owner)
	if err != nil {
		return nil, err
	}
	views := make([]keyView, len(keys))
	for i, k := range keys {
		views[i] = newKeyView(k)
	}
	return struct {
		APIKeys []keyView `json:"api_keys"`
	}{views}, nil
}

func (h *APIHandler) deleteAPIKey(r *http.Request, b *requestBody) (any, error) {
	owner, err := h.owner(r, b, "API keys cannot be used to delete API keys.")
	if err != nil {
		return nil, err
	}
	id, err := h.ownedKeyID(r, b, owner)
	if err != nil {
		return nil, err
	}
	if _, err := h.app.keyring.Delete(r.Context(), id); err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			return nil, errKeyNotFound
		}
		return nil, err
	}
	h.app.metrics.deleted.Inc()
	h.app.audit.Info("key deleted", zap.String("user", owner), zap.String("key_id", id),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))
	return nil, nil
}

func (h *APIHandler) rotateAPIKey(r *http.Request, b *requestBody) (any, error) {
	owner, err := h.owner(r, b, "API keys cannot be used to rotate API keys.")
	if err != nil {
		return nil, err
	}
	grace, err := secondsField("grace_seconds", b.GraceSeconds, MaxGrace)
	if err != nil {
		return nil, err
	}
	id, err := h.ownedKeyID(r, b, owner)
	if err != nil {
		return nil, err
	}
	next, _, err := h.app.keyring.Rotate(r.Context(), id, grace)
	if err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			return nil, errKeyNotFound
		}
		return nil, err
	}
	h.app.metrics.rotated.Inc()
	h.app.metrics.minted.Inc()
	h.app.audit.Info("key rotated", zap.String("user", owner), zap.String("key_id", id),
		zap.String("new_key_id", next.ID), zap.Duration("grace", grace),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))
	return newCreatedKey(next), nil
}

// errKeyNotFound is the one answer for an unknown id and for another
// user's key, so that ids cannot be probed.
var errKeyNotFound = fail(http.StatusNotFound, "API key not found")

// ownedKeyID reads "api_key_id" and checks that owner holds that key.
func (h *APIHandler) ownedKeyID(r *http.Request, b *requestBody, owner string) (string, error) {
	id, ok, err := stringField("api_key_id", b.APIKeyID)
	if err != nil {
		return "", err
	}
	if !ok || id == "" {
		return "", fail(http.StatusBadRequest, `"api_key_id" is required`)
	}
	k, err := h.app.keyring.KeyByID(r.Context(), id)
	if errors.Is(err, keystore.ErrNotFound) || (err == nil && k.Owner != owner) {
		return "", errKeyNotFound
	}
	return id, err
}

// mintOptions applies the app's key policy to a create request.
func (a *App) mintOptions(b *requestBody) (keystore.MintOptions, error) {
	title, err := b.title()
	if err != nil {
		return keystore.MintOptions{}, err
	}
	opts := keystore.MintOptions{Title: title, MaxPerOwner: a.MaxKeysPerUser}
	lifetime := time.Duration(a.DefaultKeyLifetime)
	if len(b.ExpiresIn) > 0 && string(b.ExpiresIn) != "null" {
		limit := time.Duration(a.MaxKeyLifetime)
		if limit == 0 {
			limit = math.MaxInt64
		}
		if lifetime, err = secondsField("expires_in", b.ExpiresIn, limit); err != nil {
			return opts, err
		}
		if lifetime == 0 {
			return opts, fail(http.StatusBadRequest, `"expires_in" must be a positive number of seconds`)
		}
	}
	if lifetime > 0 {
		opts.Expires = time.Now().Add(lifetime)
	}
	if opts.Scopes, err = a.scopesField(b.Scopes); err != nil {
		return opts, err
	}
	return opts, nil
}

func (a *App) scopesField(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var scopes []string
	if err := json.Unmarshal(raw, &scopes); err != nil {
		return nil, fail(http.StatusBadRequest, `"scopes" must be a list of strings`)
	}
	if len(scopes) > MaxScopes {
		return nil, fail(http.StatusBadRequest, `"scopes" may list at most `+strconv.Itoa(MaxScopes)+` scopes`)
	}
	seen := make(map[string]bool, len(scopes))
	out := scopes[:0]
	for _, s := range scopes {
		if err := validScope(s); err != nil {
			return nil, fail(http.StatusBadRequest, `"scopes": `+err.Error())
		}
		if len(a.AllowedScopes) > 0 && !slices.Contains(a.AllowedScopes, s) {
			return nil, fail(http.StatusBadRequest, fmt.Sprintf(`"scopes": %q is not an allowed scope (allowed: %s)`, s, strings.Join(a.AllowedScopes, ", ")))
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

// validScope accepts RFC 6749 scope tokens of reasonable length.
func validScope(s string) error {
	if s == "" || len(s) > maxScopeLen {
		return fmt.Errorf("scope names must be 1 to %d characters", maxScopeLen)
	}
	for _, c := range []byte(s) {
		if c <= 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			return fmt.Errorf("scope %q may contain only printable ASCII without spaces, quotes or backslashes", s)
		}
	}
	return nil
}

func stringField(name string, raw json.RawMessage) (string, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, fail(http.StatusBadRequest, `"`+name+`" must be a string`)
	}
	return s, true, nil
}

// secondsField reads a non-negative number of seconds, at most limit.
func secondsField(name string, raw json.RawMessage, limit time.Duration) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var secs float64
	if err := json.Unmarshal(raw, &secs); err != nil || secs < 0 || math.IsNaN(secs) {
		return 0, fail(http.StatusBadRequest, `"`+name+`" must be a non-negative number of seconds`)
	}
	if secs > limit.Seconds() {
		return 0, fail(http.StatusBadRequest, fmt.Sprintf(`"%s" may be at most %d seconds`, name, int64(limit.Seconds())))
	}
	return time.Duration(secs * float64(time.Second)), nil
}
