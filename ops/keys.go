package ops

import (
	"context"
	"errors"
	"math"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/audit"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// Key is a key as operators see it: fetch_api_keys' fields and the owner
// with its source. Never the key or its hash.
type Key struct {
	wire.KeyView
	Owner  string `json:"owner"`
	Source string `json:"source"`
}

// keyViews are keys as operators' listings show them.
func keyViews(ctx context.Context, kr *keystore.Keyring, keys []keystore.Key) ([]Key, error) {
	views, err := wire.KeyViews(ctx, kr, keys)
	if err != nil {
		return nil, err
	}
	out := make([]Key, len(keys))
	for i, k := range keys {
		out[i] = Key{KeyView: views[i], Owner: k.Owner.Name, Source: k.Owner.Source}
	}
	return out, nil
}

// keyView is one key as listings show it.
func keyView(ctx context.Context, kr *keystore.Keyring, k keystore.Key) (Key, error) {
	views, err := keyViews(ctx, kr, []keystore.Key{k})
	if err != nil {
		return Key{}, err
	}
	return views[0], nil
}

// KeyID names a key by its id, in the path.
type KeyID struct {
	ID string `json:"-" path:"id"`
}

// notFound is the operators' answer for an unknown key id.
func (k KeyID) notFound(err error) error {
	if errors.Is(err, keystore.ErrNotFound) {
		return wire.Fail(http.StatusNotFound, "no API key with id "+k.ID)
	}
	return wire.Refusal(err, wire.During{})
}

// Revoked counts the keys an operation revoked.
type Revoked struct {
	KeysRevoked int `json:"keys_revoked"`
}

// NewKey asks for a key for a user or a service.
type NewKey struct {
	OwnerRef
	// Title of the key. Default "API Key".
	Title string `json:"title,omitempty"`
	// Seconds until the key expires; 0 means the policy's default.
	ExpiresIn float64 `json:"expires_in,omitempty"`
	// Scopes the key grants.
	Scopes []string `json:"scopes,omitempty"`
	// Plan of the key's own; default its owner's or the default plan.
	Plan string `json:"plan,omitempty"`
}

// KeyPlan gives a key a plan of its own ("" for its owner's).
type KeyPlan struct {
	KeyID
	Plan string `json:"plan"`
}

// SetBalance sets a key's balance.
type SetBalance struct {
	KeyID
	Balance *int64 `json:"balance"`
}

// AddCredits adds to a key's balance (negative takes, not below 0).
type AddCredits struct {
	KeyID
	Add int64 `json:"add"`
}

// The operations on keys.
var (
	// ListKeys lists every key, or one owner's.
	ListKeys = register(&Op[OwnerRef, []Key]{Name: "list keys", Method: http.MethodGet, Path: "keys",
		Run: func(ctx context.Context, env *Env, ref OwnerRef) ([]Key, error) {
			owner, set, err := ref.Owner()
			if err != nil {
				return nil, err
			}
			var keys []keystore.Key
			if set {
				keys, err = env.Keyring.KeysByOwner(ctx, owner)
			} else {
				keys, err = env.Keyring.Keys(ctx)
			}
			if err != nil {
				return nil, err
			}
			return keyViews(ctx, env.Keyring, keys)
		}})

	// CreateKey makes a key for a user or a service, and answers it once.
	CreateKey = register(&Op[NewKey, wire.CreatedKey]{Name: "create a key", Method: http.MethodPost, Path: "keys",
		Run: func(ctx context.Context, env *Env, req NewKey) (wire.CreatedKey, error) {
			owner, err := req.required()
			if err != nil {
				return wire.CreatedKey{}, err
			}
			lifetime, err := wire.Seconds("expires_in", req.ExpiresIn, math.MaxInt64)
			if err != nil {
				return wire.CreatedKey{}, err
			}
			m, err := env.Keyring.Mint(ctx, keystore.Actor{Owner: owner, Operator: true}, keystore.KeyRequest{
				Title: req.Title, Lifetime: lifetime, Scopes: req.Scopes, Plan: req.Plan})
			switch {
			case errors.Is(err, keystore.ErrUnknownOwner) && env.Offline:
				return wire.CreatedKey{}, wire.Fail(http.StatusNotFound, "no stored user "+owner.Name+"; with --db, users declared in the config are not known: "+
					"use the running Caddy's admin API instead, or make a service key (--service) for a program")
			case errors.Is(err, keystore.ErrUnknownOwner):
				return wire.CreatedKey{}, wire.Fail(http.StatusNotFound, "no user "+owner.Name+" in the config or the store; for a program, make a service key (service instead of user)")
			case err != nil:
				return wire.CreatedKey{}, wire.Refusal(err, wire.During{})
			}
			env.count(func(c Counters) { c.Minted(1) })
			env.event("key created", audit.OwnerFields(owner, zap.String("key_id", m.ID))...)
			return wire.NewCreatedKey(m), nil
		}})

	// RevokeOwner deletes every key of an owner of any source.
	RevokeOwner = register(&Op[OwnerRef, Revoked]{Name: "revoke an owner's keys", Method: http.MethodDelete, Path: "keys",
		Run: func(ctx context.Context, env *Env, ref OwnerRef) (Revoked, error) {
			owner, err := ref.required()
			if err != nil {
				return Revoked{}, err
			}
			removed, err := env.Keyring.RevokeOwner(ctx, owner)
			if err != nil {
				return Revoked{}, err
			}
			env.count(func(c Counters) { c.Deleted(len(removed)) })
			env.event("keys of an owner revoked", audit.OwnerFields(owner, zap.Int("keys_revoked", len(removed)))...)
			env.notify(ctx, notify.RevokedEvents(removed, "via", env.Via)...)
			return Revoked{KeysRevoked: len(removed)}, nil
		}})

	// RevokeKey deletes a key.
	RevokeKey = register(&Op[KeyID, None]{Name: "revoke a key", Method: http.MethodDelete, Path: "keys/{id}",
		Run: func(ctx context.Context, env *Env, in KeyID) (None, error) {
			k, err := env.Keyring.Delete(ctx, keystore.Actor{Operator: true}, in.ID)
			if err != nil {
				return None{}, in.notFound(err)
			}
			env.count(func(c Counters) { c.Deleted(1) })
			env.event("key deleted", audit.OwnerFields(k.Owner, zap.String("key_id", in.ID))...)
			env.notify(ctx, notify.KeyEvent(notify.KeyRevoked, k, "via", env.Via))
			return None{}, nil
		}})

	// DisableKey disables a key; it is kept, and refused.
	DisableKey = register(&Op[KeyID, Key]{Name: "disable a key", Method: http.MethodPost, Path: "keys/{id}/disable",
		Run: func(ctx context.Context, env *Env, in KeyID) (Key, error) { return setDisabled(ctx, env, in, true) }})

	// EnableKey enables a disabled key (not a leaked one).
	EnableKey = register(&Op[KeyID, Key]{Name: "enable a key", Method: http.MethodPost, Path: "keys/{id}/enable",
		Run: func(ctx context.Context, env *Env, in KeyID) (Key, error) { return setDisabled(ctx, env, in, false) }})

	// SetKeyPlan gives a key a plan of its own ("" for its owner's).
	SetKeyPlan = register(&Op[KeyPlan, Key]{Name: "set a key's plan", Method: http.MethodPut, Path: "keys/{id}/plan",
		Run: func(ctx context.Context, env *Env, in KeyPlan) (Key, error) {
			k, err := env.Keyring.SetKeyPlan(ctx, in.ID, in.Plan)
			if err != nil {
				return Key{}, in.notFound(err)
			}
			env.event("key plan changed", audit.OwnerFields(k.Owner, zap.String("key_id", in.ID), zap.String("plan", in.Plan))...)
			return keyView(ctx, env.Keyring, k)
		}})

	// Credits shows a key's balance.
	Credits = register(&Op[KeyID, wire.CreditsView]{Name: "show a key's credits", Method: http.MethodGet, Path: "keys/{id}/credits",
		Run: func(ctx context.Context, env *Env, in KeyID) (wire.CreditsView, error) {
			k, err := env.Keyring.KeyByID(ctx, in.ID)
			if err != nil {
				return wire.CreditsView{}, in.notFound(err)
			}
			b, ok, err := env.Keyring.BalanceOf(ctx, k)
			switch {
			case err != nil:
				return wire.CreditsView{}, wire.Refusal(err, wire.During{})
			case !ok:
				return wire.CreditsView{}, wire.Refusal(keystore.ErrNoCredits, wire.During{})
			}
			return *wire.NewCreditsView(b), nil
		}})

	// SetCredits sets a key's balance, voiding the blocks gateways hold.
	SetCredits = register(&Op[SetBalance, wire.CreditsView]{Name: "set a key's credits", Method: http.MethodPut, Path: "keys/{id}/credits",
		Run: func(ctx context.Context, env *Env, in SetBalance) (wire.CreditsView, error) {
			if in.Balance == nil {
				return wire.CreditsView{}, wire.Fail(http.StatusBadRequest, `"balance" is required`)
			}
			return adjustCredits(ctx, env, in.KeyID, *in.Balance, true)
		}})

	// AddToCredits adds to a key's balance; a negative amount takes.
	AddToCredits = register(&Op[AddCredits, wire.CreditsView]{Name: "add to a key's credits", Method: http.MethodPost, Path: "keys/{id}/credits",
		Run: func(ctx context.Context, env *Env, in AddCredits) (wire.CreditsView, error) {
			return adjustCredits(ctx, env, in.KeyID, in.Add, false)
		}})
)

func setDisabled(ctx context.Context, env *Env, in KeyID, disabled bool) (Key, error) {
	k, changed, err := env.Keyring.ChangeDisabled(ctx, in.ID, disabled)
	if err != nil {
		return Key{}, in.notFound(err)
	}
	if changed { // else already so: nothing happened to tell of
		msg := "key enabled"
		if disabled {
			msg = "key disabled"
			env.notify(ctx, notify.KeyEvent(notify.KeyDisabled, k, "via", env.Via))
		}
		env.event(msg, audit.OwnerFields(k.Owner, zap.String("key_id", in.ID))...)
	}
	return Key{KeyView: wire.NewKeyView(k), Owner: k.Owner.Name, Source: k.Owner.Source}, nil
}

func adjustCredits(ctx context.Context, env *Env, in KeyID, amount int64, set bool) (wire.CreditsView, error) {
	k, err := env.Keyring.KeyByID(ctx, in.ID)
	if err != nil {
		return wire.CreditsView{}, in.notFound(err)
	}
	b, err := env.Keyring.AdjustCredits(ctx, k, amount, set)
	if err != nil {
		return wire.CreditsView{}, wire.Refusal(err, wire.During{})
	}
	msg := "credits added"
	if set {
		msg = "credits set"
	}
	env.event(msg, audit.OwnerFields(k.Owner, zap.String("key_id", in.ID), zap.Int64("amount", amount), zap.Int64("remaining", b.Remaining))...)
	return *wire.NewCreditsView(b), nil
}
