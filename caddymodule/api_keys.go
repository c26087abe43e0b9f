package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
)

// MaxGrace is the longest rotation grace period.
const MaxGrace = 30 * 24 * time.Hour

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
	// Rotated keys work only until "expires", the end of their grace.
	Rotated bool `json:"rotated,omitempty"`
	// Orphaned keys belong to a password user who no longer exists and
	// are refused.
	Orphaned bool `json:"orphaned,omitempty"`
	// Leaked keys were reported found in public by a secret scanner and
	// are refused for good.
	Leaked bool `json:"leaked,omitempty"`
	// Plan is the plan the key follows, when it has one (listings only).
	Plan string `json:"plan,omitempty"`
	// Limits are the plan's rate limits (listings only).
	Limits []limitView `json:"limits,omitempty"`
	// Credits are the key's balance, when its plan has credits
	// (listings only).
	Credits *creditsView `json:"credits,omitempty"`
}

// limitView is one rate limit of a key's plan.
type limitView struct {
	Name  string `json:"name"`
	Limit int64  `json:"limit"`
	// Window in seconds.
	Window int64 `json:"window"`
	// Shared says the limit counts all the keys of the owner together.
	Shared bool `json:"shared,omitempty"`
}

// creditsView is a key's balance.
type creditsView struct {
	Remaining int64 `json:"remaining"`
	// Amount is what each refill gives.
	Amount int64 `json:"amount"`
	// Refill is the seconds between refills; absent if the credits never
	// refill.
	Refill int64 `json:"refill,omitempty"`
	// NextRefill is when the balance is next replaced; absent until the
	// first request starts the account's periods.
	NextRefill *epochSeconds `json:"next_refill,omitempty"`
	// Shared says the balance is the owner's, shared by all its keys.
	Shared bool `json:"shared,omitempty"`
}

// keyViews are keys as listings show them, each with its own plan,
// limits and balance (keys without a plan have none).
func keyViews(ctx context.Context, kr *keystore.Keyring, keys []keystore.Key) ([]keyView, error) {
	views := make([]keyView, len(keys))
	for i, k := range keys {
		views[i] = newKeyView(k)
		if len(kr.Policy().Plans) == 0 {
			continue
		}
		if err := withPlan(ctx, kr, k, &views[i]); err != nil {
			return nil, err
		}
	}
	return views, nil
}

// withPlan adds k's plan, limits and balance to its view v.
func withPlan(ctx context.Context, kr *keystore.Keyring, k keystore.Key, v *keyView) error {
	plan, err := kr.PlanOf(ctx, k)
	if err != nil || plan == nil {
		return err
	}
	v.Plan = plan.Name
	for _, r := range plan.Rates {
		v.Limits = append(v.Limits, limitView{Name: r.Name, Limit: r.Limit, Window: int64(r.Window / time.Second)})
	}
	for _, r := range plan.OwnerRates {
		v.Limits = append(v.Limits, limitView{Name: r.Name, Limit: r.Limit, Window: int64(r.Window / time.Second), Shared: true})
	}
	b, ok, err := kr.BalanceOf(ctx, k)
	if err != nil {
		return err
	}
	if ok {
		v.Credits = newCreditsView(b)
	}
	return nil
}

func newCreditsView(b keystore.Balance) *creditsView {
	return &creditsView{Remaining: b.Remaining, Amount: b.Amount, Refill: int64(b.Refill / time.Second),
		NextRefill: optionalEpoch(b.NextRefill), Shared: b.Shared}
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
		Rotated:    k.Rotated,
		Orphaned:   k.Orphaned,
		Leaked:     k.Leaked,
	}
}

func (h *APIHandler) createAPIKey(r *http.Request, b *requestBody) (any, error) {
	id, err := h.caller(r, b, "API keys cannot be used to create API keys.")
	if err != nil {
		return nil, err
	}
	req, err := keyRequest(b)
	if err != nil {
		return nil, err
	}
	m, err := h.app.keyring.Mint(r.Context(), id.Actor(), req)
	if err != nil {
		return nil, h.app.policyRefusal(err, false)
	}
	h.app.metrics.minted.Inc()
	h.app.audit.Info("key created", ownerFields(m.Owner, zap.String("key_id", m.ID),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))...)
	return newCreatedKey(m), nil
}

func (h *APIHandler) fetchAPIKeys(r *http.Request, b *requestBody) (any, error) {
	id, err := h.caller(r, b, "API keys cannot be used to fetch API keys.")
	if err != nil {
		return nil, err
	}
	keys, err := h.app.keyring.KeysByOwner(r.Context(), id.Owner)
	if err != nil {
		return nil, err
	}
	views, err := keyViews(r.Context(), h.app.keyring, keys)
	if err != nil {
		return nil, err
	}
	return struct {
		APIKeys []keyView `json:"api_keys"`
	}{views}, nil
}

func (h *APIHandler) deleteAPIKey(r *http.Request, b *requestBody) (any, error) {
	id, err := h.caller(r, b, "API keys cannot be used to delete API keys.")
	if err != nil {
		return nil, err
	}
	keyID, err := keyIDField(b)
	if err != nil {
		return nil, err
	}
	deleted, err := h.app.keyring.Delete(r.Context(), id.Actor(), keyID)
	if err != nil {
		return nil, h.app.policyRefusal(err, false)
	}
	h.app.metrics.deleted.Inc()
	h.app.audit.Info("key deleted", ownerFields(id.Owner, zap.String("key_id", keyID),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))...)
	h.app.publish(r.Context(), keyEvent(notify.KeyRevoked, deleted, "via", "api"))
	return nil, nil
}

func (h *APIHandler) rotateAPIKey(r *http.Request, b *requestBody) (any, error) {
	id, err := h.caller(r, b, "API keys cannot be used to rotate API keys.")
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
	next, _, err := h.app.keyring.Rotate(r.Context(), id.Actor(), keyID, grace)
	if err != nil {
		return nil, h.app.policyRefusal(err, true)
	}
	h.app.metrics.rotated.Inc()
	h.app.metrics.minted.Inc()
	h.app.audit.Info("key rotated", ownerFields(id.Owner, zap.String("key_id", keyID),
		zap.String("new_key_id", next.ID), zap.Duration("grace", grace),
		zap.String("via", "api"), zap.String("remote_addr", r.RemoteAddr))...)
	return newCreatedKey(next), nil
}

// ownerFields are the audit log's fields for owner: the name and, apart,
// its source, followed by fields.
func ownerFields(o keystore.Owner, fields ...zap.Field) []zap.Field {
	out := make([]zap.Field, 0, 2+len(fields)) // one allocation, as the logger keeps them
	return append(append(out, zap.String("user", o.Name), zap.String("source", o.Source)), fields...)
}

// errKeyNotFound is the one answer for an unknown id and for another
// owner's key, so that ids cannot be probed.
var errKeyNotFound = fail(http.StatusNotFound, "API key not found")

// policyRefusal turns what the key policy refused into the answer the
// caller sees; other errors (store faults) pass through. A scope refused
// in a rotation is 403 whatever the cause: the caller did not ask for it.
func (a *App) policyRefusal(err error, rotating bool) error {
	var re *keystore.RequestError
	var se *keystore.ScopeError
	switch {
	case errors.As(err, &re):
		return fail(http.StatusBadRequest, re.Msg)
	case errors.As(err, &se) && se.Unknown && !rotating:
		return fail(http.StatusBadRequest, `"scopes": `+se.Error())
	case errors.As(err, &se) && se.Unknown:
		return fail(http.StatusForbidden, fmt.Sprintf("the key has the scope %q, which is no longer allowed; it cannot be rotated", se.Scope))
	case errors.As(err, &se) && rotating:
		return fail(http.StatusForbidden, fmt.Sprintf("the key has the scope %q, which you may no longer give keys; it cannot be rotated", se.Scope))
	case errors.As(err, &se):
		return fail(http.StatusForbidden, se.Error())
	case errors.Is(err, keystore.ErrBadName):
		return fail(http.StatusBadRequest, err.Error())
	case errors.Is(err, keystore.ErrLimit) && rotating:
		return fail(http.StatusConflict, fmt.Sprintf("key limit reached: an owner may hold at most %d keys, counting keys in a rotation's grace period; rotate without grace_seconds, or delete a key first", a.MaxKeysPerUser))
	case errors.Is(err, keystore.ErrLimit):
		return fail(http.StatusConflict, fmt.Sprintf("key limit reached: an owner may hold at most %d keys; delete one first", a.MaxKeysPerUser))
	case errors.Is(err, keystore.ErrDisabled):
		return fail(http.StatusForbidden, "the key is disabled; a disabled key cannot be rotated")
	case errors.Is(err, keystore.ErrLeaked):
		return fail(http.StatusConflict, err.Error())
	case errors.Is(err, keystore.ErrExpired):
		return fail(http.StatusConflict, "the key has expired; an expired key cannot be rotated")
	case errors.Is(err, keystore.ErrRotated):
		return fail(http.StatusConflict, "the key was already rotated and is in its grace period; rotate the key that replaced it")
	case errors.Is(err, keystore.ErrUnknownOwner):
		return fail(http.StatusUnauthorized, "no such user")
	case errors.Is(err, keystore.ErrNotFound):
		return errKeyNotFound
	}
	return err
}

// keyIDField reads the required "api_key_id".
func keyIDField(b *requestBody) (string, error) {
	id, ok, err := stringField("api_key_id", b.APIKeyID)
	if err != nil {
		return "", err
	}
	if !ok || id == "" {
		return "", fail(http.StatusBadRequest, `"api_key_id" is required`)
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
			return req, fail(http.StatusBadRequest, `"expires_in" must be a positive number of seconds`)
		}
	}
	if len(b.Scopes) > 0 && string(b.Scopes) != "null" {
		var scopes []string // here, so that only a request with scopes allocates it
		if err := json.Unmarshal(b.Scopes, &scopes); err != nil {
			return req, fail(http.StatusBadRequest, `"scopes" must be a list of strings`)
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
	if err := json.Unmarshal(raw, &secs); err != nil {
		return 0, fail(http.StatusBadRequest, `"`+name+`" must be a non-negative number of seconds`)
	}
	return seconds(name, secs, limit)
}

// seconds is secs seconds as a duration: the one reading of a number of
// seconds in the API and the admin API. It refuses negative numbers and
// numbers past limit (at most the longest duration, about 292 years)
// instead of letting them wrap around.
func seconds(name string, secs float64, limit time.Duration) (time.Duration, error) {
	if secs < 0 || math.IsNaN(secs) {
		return 0, fail(http.StatusBadRequest, `"`+name+`" must be a non-negative number of seconds`)
	}
	// Whole seconds only in the message; the comparison is in
	// nanoseconds, where a float64 near the limit cannot round past it.
	if whole := int64(limit / time.Second); secs > float64(whole) {
		return 0, fail(http.StatusBadRequest, fmt.Sprintf(`"%s" may be at most %d seconds`, name, whole))
	}
	return time.Duration(secs * float64(time.Second)), nil
}
