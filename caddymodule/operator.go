package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// operator carries out the operator's actions on a keyring. The admin API
// uses it on the running app's keyring, and `caddy apikeys --db` on a
// keyring over a database file opened directly, so both behave the same.
// Operators are trusted: the app's key policy does not apply to them.
type operator struct {
	keyring *keystore.Keyring
	audit   *zap.Logger
	metrics *metrics // nil when offline
	via     string   // "admin_api" or "cli"
	remote  string   // the admin API client's address, if any
}

// adminKey is a key as operators see it: fetch_api_keys' fields and the
// owner. Never the key or its hash.
type adminKey struct {
	keyView
	Owner string `json:"owner"`
}

func newAdminKey(k keystore.Key) adminKey { return adminKey{keyView: newKeyView(k), Owner: k.Owner} }

// adminUser is a stored user as operators see it: never the hash.
type adminUser struct {
	Username string       `json:"username"`
	Created  epochSeconds `json:"created"`
}

// newKeyRequest asks for a service key.
type newKeyRequest struct {
	// User the key acts for. Required.
	User string `json:"user"`
	// Title of the key. Default "API Key".
	Title string `json:"title,omitempty"`
	// Seconds until the key expires; 0 means never.
	ExpiresIn float64 `json:"expires_in,omitempty"`
	// Scopes the key grants.
	Scopes []string `json:"scopes,omitempty"`
}

// userRequest adds a user or sets a password. Exactly one of Password
// (hashed here) and PasswordHash (bcrypt or argon2id) is given.
type userRequest struct {
	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"`
}

func (o operator) event(msg string, fields ...zap.Field) {
	fields = append(fields, zap.String("via", o.via))
	if o.remote != "" {
		fields = append(fields, zap.String("remote_addr", o.remote))
	}
	o.audit.Info(msg, fields...)
}

func (o operator) listKeys(ctx context.Context, user string) ([]adminKey, error) {
	var keys []keystore.Key
	var err error
	if user != "" {
		keys, err = o.keyring.KeysByOwner(ctx, user)
	} else {
		keys, err = o.keyring.Keys(ctx)
	}
	if err != nil {
		return nil, err
	}
	out := make([]adminKey, len(keys))
	for i, k := range keys {
		out[i] = newAdminKey(k)
	}
	return out, nil
}

func (o operator) createKey(ctx context.Context, req newKeyRequest) (createdKey, error) {
	if req.User == "" {
		return createdKey{}, fail(http.StatusBadRequest, "a user is required")
	}
	if req.ExpiresIn < 0 {
		return createdKey{}, fail(http.StatusBadRequest, "expires_in must not be negative")
	}
	opts := keystore.MintOptions{Title: req.Title}
	if opts.Title == "" {
		opts.Title = DefaultTitle
	}
	if req.ExpiresIn > 0 {
		opts.Expires = time.Now().Add(time.Duration(req.ExpiresIn * float64(time.Second)))
	}
	for _, s := range req.Scopes {
		if err := validScope(s); err != nil {
			return createdKey{}, fail(http.StatusBadRequest, err.Error())
		}
	}
	opts.Scopes = req.Scopes
	m, err := o.keyring.Mint(ctx, req.User, opts)
	if err != nil {
		return createdKey{}, err
	}
	if o.metrics != nil {
		o.metrics.minted.Inc()
	}
	o.event("key created", zap.String("user", req.User), zap.String("key_id", m.ID))
	return newCreatedKey(m), nil
}

func (o operator) revokeKey(ctx context.Context, id string) error {
	k, err := o.keyring.Delete(ctx, id)
	if err != nil {
		return notFoundAs(err, "no API key with id "+id)
	}
	if o.metrics != nil {
		o.metrics.deleted.Inc()
	}
	o.event("key deleted", zap.String("user", k.Owner), zap.String("key_id", id))
	return nil
}

func (o operator) setDisabled(ctx context.Context, id string, disabled bool) (adminKey, error) {
	k, err := o.keyring.SetDisabled(ctx, id, disabled)
	if err != nil {
		return adminKey{}, notFoundAs(err, "no API key with id "+id)
	}
	msg := "key enabled"
	if disabled {
		msg = "key disabled"
	}
	o.event(msg, zap.String("user", k.Owner), zap.String("key_id", id))
	return newAdminKey(k), nil
}

func (o operator) listUsers(ctx context.Context) ([]adminUser, error) {
	users, err := o.keyring.Store().Users(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]adminUser, len(users))
	for i, u := range users {
		out[i] = adminUser{Username: u.Name, Created: epochSeconds(u.Created)}
	}
	return out, nil
}

func (o operator) addUser(ctx context.Context, req userRequest) error {
	if err := validUsername(req.Username); err != nil {
		return err
	}
	hash, err := req.hash()
	if err != nil {
		return err
	}
	err = o.keyring.Store().CreateUser(ctx, keystore.User{Name: req.Username, PasswordHash: hash, Created: time.Now()})
	if errors.Is(err, keystore.ErrExists) {
		return fail(http.StatusConflict, "user "+req.Username+" already exists")
	}
	if err != nil {
		return err
	}
	o.event("user added", zap.String("user", req.Username))
	return nil
}

func (o operator) setPassword(ctx context.Context, name string, req userRequest) error {
	hash, err := req.hash()
	if err != nil {
		return err
	}
	if err := o.keyring.Store().SetPassword(ctx, name, hash); err != nil {
		return notFoundAs(err, "no stored user "+name)
	}
	o.event("password changed", zap.String("user", name))
	return nil
}

func (o operator) removeUser(ctx context.Context, name string) (int, error) {
	removed, err := o.keyring.RemoveUser(ctx, name)
	if err != nil {
		return 0, notFoundAs(err, "no stored user "+name)
	}
	if o.metrics != nil {
		o.metrics.deleted.Add(float64(len(removed)))
	}
	o.event("user removed", zap.String("user", name), zap.Int("keys_revoked", len(removed)))
	return len(removed), nil
}

func (r userRequest) hash() (string, error) {
	switch {
	case r.Password != "" && r.PasswordHash != "":
		return "", fail(http.StatusBadRequest, "give either password or password_hash, not both")
	case r.PasswordHash != "":
		h, err := identity.NormalizeHash(r.PasswordHash)
		if err != nil {
			return "", fail(http.StatusBadRequest, err.Error())
		}
		return h, nil
	case r.Password != "":
		return identity.HashPassword(r.Password)
	}
	return "", fail(http.StatusBadRequest, "a password (or password_hash) is required")
}

// validUsername keeps names printable and free of the store's separator.
func validUsername(name string) error {
	if name == "" || len(name) > 128 {
		return fail(http.StatusBadRequest, "usernames must be 1 to 128 bytes")
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return fail(http.StatusBadRequest, "usernames must not contain control characters")
		}
	}
	return nil
}

func notFoundAs(err error, msg string) error {
	if errors.Is(err, keystore.ErrNotFound) {
		return fail(http.StatusNotFound, msg)
	}
	return err
}
