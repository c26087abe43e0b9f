package caddymodule

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"math"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
)

// operator carries out the operator's actions on a keyring. The admin API
// uses it on the running app's keyring, and `caddy apikeys --db` on a
// keyring over a database file opened directly, so both behave the same.
// Operators are trusted: they act on any owner's keys and may give keys
// any scope of the vocabulary, and the per-owner cap does not hold them;
// the rest of the key policy (lifetimes, vocabulary, titles) does.
type operator struct {
	keyring *keystore.Keyring
	audit   *zap.Logger
	metrics *metrics // nil when offline
	via     string   // "admin_api" or "cli"
	remote  string   // the admin API client's address, if any
	offline bool     // a store opened directly: config users are unknown
	// publish queues notices of what happened to keys; nil when offline
	// (a stopped gateway has no notify endpoints).
	publish func(context.Context, ...notify.Event)
}

// notify queues notices, if the operator sends any.
func (o operator) notify(ctx context.Context, events ...notify.Event) {
	if o.publish != nil {
		o.publish(ctx, events...)
	}
}

// adminKey is a key as operators see it: fetch_api_keys' fields and the
// owner with its source. Never the key or its hash.
type adminKey struct {
	keyView
	Owner  string `json:"owner"`
	Source string `json:"source"`
}

func newAdminKey(k keystore.Key) adminKey {
	return adminKey{keyView: newKeyView(k), Owner: k.Owner.Name, Source: k.Owner.Source}
}

// adminUser is a stored user as operators see it: never the hash.
type adminUser struct {
	Username string       `json:"username"`
	Created  epochSeconds `json:"created"`
	Scopes   []string     `json:"scopes,omitempty"`
	Plan     string       `json:"plan,omitempty"`
}

// ownerRef names an owner in admin requests and CLI flags: a password
// user by default, a service, or a user of another source.
type ownerRef struct {
	// User is a password user's name, or, with Source, a token identity.
	User string `json:"user,omitempty"`
	// Service is an operator-made owner, instead of User.
	Service string `json:"service,omitempty"`
	// Source of User when it is not a password user, e.g.
	// "jwt:https://idp.example" (as key listings show it).
	Source string `json:"source,omitempty"`
}

// owner resolves the reference; set reports whether it names anyone.
func (r ownerRef) owner() (o keystore.Owner, set bool, err error) {
	switch {
	case r.User == "" && r.Service == "" && r.Source == "":
		return keystore.Owner{}, false, nil
	case r.User != "" && r.Service != "":
		return keystore.Owner{}, true, fail(http.StatusBadRequest, "give either a user or a service, not both")
	case r.Service != "" && r.Source != "" && r.Source != keystore.SourceService:
		return keystore.Owner{}, true, fail(http.StatusBadRequest, "a service has no other source")
	case r.Service != "":
		o = keystore.Service(r.Service)
	case r.User == "":
		return keystore.Owner{}, true, fail(http.StatusBadRequest, "a source needs a user")
	default:
		o = keystore.Owner{Source: cmp.Or(r.Source, keystore.SourcePassword), Name: r.User}
	}
	if err := o.Check(); err != nil {
		return o, true, fail(http.StatusBadRequest, err.Error())
	}
	return o, true, nil
}

// newKeyRequest asks for a key for a user or a service.
type newKeyRequest struct {
	ownerRef
	// Title of the key. Default "API Key".
	Title string `json:"title,omitempty"`
	// Seconds until the key expires; 0 means the policy's default.
	ExpiresIn float64 `json:"expires_in,omitempty"`
	// Scopes the key grants.
	Scopes []string `json:"scopes,omitempty"`
	// Plan of the key's own; default its owner's or the default plan.
	Plan string `json:"plan,omitempty"`
}

// userRequest adds a user, sets a password or sets scopes. To add a user
// or set a password, exactly one of Password (hashed here) and
// PasswordHash (bcrypt or argon2id) is given.
type userRequest struct {
	Username     string   `json:"username,omitempty"`
	Password     string   `json:"password,omitempty"`
	PasswordHash string   `json:"password_hash,omitempty"`
	Scopes       []string `json:"scopes,omitempty"`
	// OrphanedKeys says what becomes of keys a former user of the same
	// name left: "adopt" (the new user is that person) or "revoke".
	// Without it, adding such a user is refused.
	OrphanedKeys string `json:"orphaned_keys,omitempty"`
}

func (o operator) event(msg string, fields ...zap.Field) {
	fields = append(fields, zap.String("via", o.via))
	if o.remote != "" {
		fields = append(fields, zap.String("remote_addr", o.remote))
	}
	o.audit.Info(msg, fields...)
}

func (o operator) listKeys(ctx context.Context, ref ownerRef) ([]adminKey, error) {
	owner, set, err := ref.owner()
	if err != nil {
		return nil, err
	}
	var keys []keystore.Key
	if set {
		keys, err = o.keyring.KeysByOwner(ctx, owner)
	} else {
		keys, err = o.keyring.Keys(ctx)
	}
	if err != nil {
		return nil, err
	}
	views, err := keyViews(ctx, o.keyring, keys)
	if err != nil {
		return nil, err
	}
	out := make([]adminKey, len(keys))
	for i, k := range keys {
		out[i] = adminKey{keyView: views[i], Owner: k.Owner.Name, Source: k.Owner.Source}
	}
	return out, nil
}

func (o operator) createKey(ctx context.Context, req newKeyRequest) (createdKey, error) {
	owner, set, err := req.owner()
	if err != nil {
		return createdKey{}, err
	}
	if !set {
		return createdKey{}, fail(http.StatusBadRequest, "a user or a service is required")
	}
	lifetime, err := seconds("expires_in", req.ExpiresIn, math.MaxInt64)
	if err != nil {
		return createdKey{}, err
	}
	m, err := o.keyring.Mint(ctx, keystore.Actor{Owner: owner, Operator: true}, keystore.KeyRequest{
		Title:    req.Title,
		Lifetime: lifetime,
		Scopes:   req.Scopes,
		Plan:     req.Plan,
	})
	if errors.Is(err, keystore.ErrUnknownOwner) && o.offline {
		return createdKey{}, fail(http.StatusNotFound, "no stored user "+owner.Name+"; with --db, users declared in the config are not known: "+
			"use the running Caddy's admin API instead, or make a service key (--service) for a program")
	}
	if errors.Is(err, keystore.ErrUnknownOwner) {
		return createdKey{}, fail(http.StatusNotFound, "no user "+owner.Name+" in the config or the store; for a program, make a service key (service instead of user)")
	}
	if err != nil {
		return createdKey{}, o.policyRefusal(err)
	}
	if o.metrics != nil {
		o.metrics.minted.Inc()
	}
	o.event("key created", ownerFields(owner, zap.String("key_id", m.ID))...)
	return newCreatedKey(m), nil
}

// policyRefusal is the answer to what the key policy refused.
func (o operator) policyRefusal(err error) error {
	var re *keystore.RequestError
	var se *keystore.ScopeError
	switch {
	case errors.As(err, &re):
		return fail(http.StatusBadRequest, re.Msg)
	case errors.As(err, &se):
		return fail(http.StatusBadRequest, se.Error())
	case errors.Is(err, keystore.ErrBadName):
		return fail(http.StatusBadRequest, err.Error())
	case errors.Is(err, keystore.ErrPolicyUnknown):
		return fail(http.StatusBadRequest, errNoPolicy.Error())
	case errors.Is(err, keystore.ErrUnknownPlan), errors.Is(err, keystore.ErrNoCredits):
		return fail(http.StatusBadRequest, err.Error())
	case errors.Is(err, keystore.ErrConfigUser):
		return fail(http.StatusConflict, "the user is declared in the config: set it there")
	}
	return err
}

// setKeyPlan gives a key a plan of its own ("" for its owner's).
func (o operator) setKeyPlan(ctx context.Context, id, plan string) (adminKey, error) {
	k, err := o.keyring.SetKeyPlan(ctx, id, plan)
	if errors.Is(err, keystore.ErrNotFound) {
		return adminKey{}, fail(http.StatusNotFound, "no API key with id "+id)
	}
	if err != nil {
		return adminKey{}, o.policyRefusal(err)
	}
	o.event("key plan changed", ownerFields(k.Owner, zap.String("key_id", id), zap.String("plan", plan))...)
	keys, err := o.listOne(ctx, k)
	return keys, err
}

// listOne is a key as listings show it.
func (o operator) listOne(ctx context.Context, k keystore.Key) (adminKey, error) {
	views, err := keyViews(ctx, o.keyring, []keystore.Key{k})
	if err != nil {
		return adminKey{}, err
	}
	return adminKey{keyView: views[0], Owner: k.Owner.Name, Source: k.Owner.Source}, nil
}

// credits returns a key's balance.
func (o operator) credits(ctx context.Context, id string) (creditsView, error) {
	k, err := o.keyring.KeyByID(ctx, id)
	if err != nil {
		return creditsView{}, notFoundAs(err, "no API key with id "+id)
	}
	b, ok, err := o.keyring.BalanceOf(ctx, k)
	if err != nil {
		return creditsView{}, o.policyRefusal(err)
	}
	if !ok {
		return creditsView{}, fail(http.StatusBadRequest, keystore.ErrNoCredits.Error())
	}
	return *newCreditsView(b), nil
}

// adjustCredits sets a key's balance (set) or adds to it.
func (o operator) adjustCredits(ctx context.Context, id string, amount int64, set bool) (creditsView, error) {
	k, err := o.keyring.KeyByID(ctx, id)
	if err != nil {
		return creditsView{}, notFoundAs(err, "no API key with id "+id)
	}
	b, err := o.keyring.AdjustCredits(ctx, k, amount, set)
	if err != nil {
		return creditsView{}, o.policyRefusal(err)
	}
	msg := "credits added"
	if set {
		msg = "credits set"
	}
	o.event(msg, ownerFields(k.Owner, zap.String("key_id", id), zap.Int64("amount", amount), zap.Int64("remaining", b.Remaining))...)
	return *newCreditsView(b), nil
}

// setUserPlan gives a stored user's keys a plan.
func (o operator) setUserPlan(ctx context.Context, name, plan string) (adminUser, error) {
	u, err := o.keyring.SetUserPlan(ctx, name, plan)
	if errors.Is(err, keystore.ErrNotFound) {
		return adminUser{}, fail(http.StatusNotFound, "no stored user "+name)
	}
	if err != nil {
		return adminUser{}, o.policyRefusal(err)
	}
	o.event("user plan changed", zap.String("user", name), zap.String("plan", plan))
	return adminUser{Username: u.Name, Created: epochSeconds(u.Created), Scopes: u.Scopes, Plan: u.Plan}, nil
}

func (o operator) revokeKey(ctx context.Context, id string) error {
	k, err := o.keyring.Delete(ctx, keystore.Actor{Operator: true}, id)
	if err != nil {
		return notFoundAs(err, "no API key with id "+id)
	}
	if o.metrics != nil {
		o.metrics.deleted.Inc()
	}
	o.event("key deleted", ownerFields(k.Owner, zap.String("key_id", id))...)
	o.notify(ctx, keyEvent(notify.KeyRevoked, k, "via", o.via))
	return nil
}

// revokeOwner deletes every key of an owner of any source.
func (o operator) revokeOwner(ctx context.Context, ref ownerRef) (int, error) {
	owner, set, err := ref.owner()
	if err != nil {
		return 0, err
	}
	if !set {
		return 0, fail(http.StatusBadRequest, "a user or a service is required")
	}
	removed, err := o.keyring.RevokeOwner(ctx, owner)
	if err != nil {
		return 0, err
	}
	if o.metrics != nil {
		o.metrics.deleted.Add(float64(len(removed)))
	}
	o.event("keys of an owner revoked", ownerFields(owner, zap.Int("keys_revoked", len(removed)))...)
	o.notify(ctx, revokedEvents(removed, "via", o.via)...)
	return len(removed), nil
}

func (o operator) setDisabled(ctx context.Context, id string, disabled bool) (adminKey, error) {
	k, changed, err := o.keyring.ChangeDisabled(ctx, id, disabled)
	if errors.Is(err, keystore.ErrLeaked) {
		return adminKey{}, fail(http.StatusConflict, err.Error())
	}
	if err != nil {
		return adminKey{}, notFoundAs(err, "no API key with id "+id)
	}
	if !changed { // already so: nothing happened to tell of
		return newAdminKey(k), nil
	}
	msg := "key enabled"
	if disabled {
		msg = "key disabled"
		o.notify(ctx, keyEvent(notify.KeyDisabled, k, "via", o.via))
	}
	o.event(msg, ownerFields(k.Owner, zap.String("key_id", id))...)
	return newAdminKey(k), nil
}

func (o operator) listUsers(ctx context.Context) ([]adminUser, error) {
	users, err := o.keyring.StoredUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]adminUser, len(users))
	for i, u := range users {
		out[i] = adminUser{Username: u.Name, Created: epochSeconds(u.Created), Scopes: u.Scopes, Plan: u.Plan}
	}
	return out, nil
}

func (o operator) addUser(ctx context.Context, req userRequest) error {
	if err := keystore.CheckName(req.Username); err != nil {
		return fail(http.StatusBadRequest, "username: "+err.Error())
	}
	hash, err := req.hash()
	if err != nil {
		return err
	}
	orphans := keystore.RefuseOrphans
	switch req.OrphanedKeys {
	case "":
	case "adopt":
		orphans = keystore.AdoptOrphans
	case "revoke":
		orphans = keystore.RevokeOrphans
	default:
		return fail(http.StatusBadRequest, `orphaned_keys must be "adopt" or "revoke"`)
	}
	err = o.keyring.AddUser(ctx, keystore.User{Name: req.Username, PasswordHash: hash, Scopes: req.Scopes, Created: time.Now()}, orphans)
	var oe *keystore.OrphansError
	switch {
	case errors.Is(err, keystore.ErrExists):
		return fail(http.StatusConflict, "user "+req.Username+" already exists")
	case errors.Is(err, keystore.ErrConfigUser):
		return fail(http.StatusConflict, "user "+req.Username+" is declared in the config: manage it there (a stored user of the same name would be shadowed by it)")
	case errors.As(err, &oe):
		return fail(http.StatusConflict, oe.Error()+`: add the user with "orphaned_keys": "adopt" (caddy apikeys user add --adopt-keys) if it is the same person, or "revoke"`)
	case err != nil:
		return o.policyRefusal(err)
	}
	o.event("user added", zap.String("user", req.Username), zap.Strings("scopes", req.Scopes))
	return nil
}

func (o operator) setPassword(ctx context.Context, name string, req userRequest) error {
	hash, err := req.hash()
	if err != nil {
		return err
	}
	if err := o.keyring.SetPassword(ctx, name, hash); err != nil {
		return notFoundAs(err, "no stored user "+name)
	}
	o.event("password changed", zap.String("user", name))
	return nil
}

// setScopes replaces what a stored user may give keys; keys minted
// before keep their scopes.
func (o operator) setScopes(ctx context.Context, name string, scopes []string) (adminUser, error) {
	u, err := o.keyring.SetUserScopes(ctx, name, scopes)
	if errors.Is(err, keystore.ErrNotFound) {
		return adminUser{}, fail(http.StatusNotFound, "no stored user "+name+" (the scopes of users in the config are set there)")
	}
	if err != nil {
		return adminUser{}, o.policyRefusal(err)
	}
	o.event("user scopes changed", zap.String("user", name), zap.Strings("scopes", scopes))
	return adminUser{Username: u.Name, Created: epochSeconds(u.Created), Scopes: u.Scopes}, nil
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
	o.notify(ctx, revokedEvents(removed, "via", o.via)...)
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

func notFoundAs(err error, msg string) error {
	if errors.Is(err, keystore.ErrNotFound) {
		return fail(http.StatusNotFound, msg)
	}
	return err
}
