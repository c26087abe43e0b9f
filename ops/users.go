package ops

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// User is a stored user as operators see it: never the hash.
type User struct {
	Username string     `json:"username"`
	Created  wire.Epoch `json:"created"`
	Scopes   []string   `json:"scopes,omitempty"`
	Plan     string     `json:"plan,omitempty"`
}

func newUser(u keystore.User) User {
	return User{Username: u.Name, Created: wire.Epoch(u.Created), Scopes: u.Scopes, Plan: u.Plan}
}

// UserName names a stored user, in the path.
type UserName struct {
	Name string `json:"-" path:"name"`
}

// notFound is the operators' answer for an unknown stored user.
func (u UserName) notFound(err error, hint string) error {
	if errors.Is(err, keystore.ErrNotFound) {
		return wire.Fail(http.StatusNotFound, "no stored user "+u.Name+hint)
	}
	return wire.Refusal(err, wire.During{})
}

// Password gives a password: exactly one of Password (hashed here) and
// PasswordHash (bcrypt or argon2id). The CLI sends only hashes.
type Password struct {
	Password     string `json:"password,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"`
}

// hash is the password's hash, checked or made.
func (p Password) hash() (string, error) {
	switch {
	case p.Password != "" && p.PasswordHash != "":
		return "", wire.Fail(http.StatusBadRequest, "give either password or password_hash, not both")
	case p.PasswordHash != "":
		h, err := identity.NormalizeHash(p.PasswordHash)
		if err != nil {
			return "", wire.Fail(http.StatusBadRequest, err.Error())
		}
		return h, nil
	case p.Password != "":
		return identity.HashPassword(p.Password)
	}
	return "", wire.Fail(http.StatusBadRequest, "a password (or password_hash) is required")
}

// NewUser adds a stored user.
type NewUser struct {
	Username string `json:"username"`
	Password
	Scopes []string `json:"scopes,omitempty"`
	// OrphanedKeys says what becomes of keys a former user of the same
	// name left: "adopt" (the new user is that person) or "revoke".
	// Without it, adding such a user is refused.
	OrphanedKeys string `json:"orphaned_keys,omitempty"`
}

// NewPassword sets a stored user's password.
type NewPassword struct {
	UserName
	Password
}

// UserScopes sets the scopes a stored user may give keys.
type UserScopes struct {
	UserName
	Scopes []string `json:"scopes"`
}

// UserPlan sets the plan of a stored user's keys ("" for the default).
type UserPlan struct {
	UserName
	Plan string `json:"plan"`
}

// The operations on stored users.
var (
	// ListUsers lists the stored users.
	ListUsers = register(&Op[None, []User]{Name: "list users", Method: http.MethodGet, Path: "users",
		Run: func(ctx context.Context, env *Env, _ None) ([]User, error) {
			users, err := env.Keyring.StoredUsers(ctx)
			if err != nil {
				return nil, err
			}
			out := make([]User, len(users))
			for i, u := range users {
				out[i] = newUser(u)
			}
			return out, nil
		}})

	// AddUser adds a stored user.
	AddUser = register(&Op[NewUser, None]{Name: "add a user", Method: http.MethodPost, Path: "users",
		Run: func(ctx context.Context, env *Env, req NewUser) (None, error) {
			if err := keystore.CheckName(req.Username); err != nil {
				return None{}, wire.Fail(http.StatusBadRequest, "username: "+err.Error())
			}
			hash, err := req.hash()
			if err != nil {
				return None{}, err
			}
			orphans := keystore.RefuseOrphans
			switch req.OrphanedKeys {
			case "":
			case "adopt":
				orphans = keystore.AdoptOrphans
			case "revoke":
				orphans = keystore.RevokeOrphans
			default:
				return None{}, wire.Fail(http.StatusBadRequest, `orphaned_keys must be "adopt" or "revoke"`)
			}
			err = env.Keyring.AddUser(ctx, keystore.User{Name: req.Username, PasswordHash: hash, Scopes: req.Scopes, Created: time.Now()}, orphans)
			switch {
			case errors.Is(err, keystore.ErrExists):
				return None{}, wire.Fail(http.StatusConflict, "user "+req.Username+" already exists")
			case err != nil:
				return None{}, wire.Refusal(err, wire.During{})
			}
			env.event("user added", zap.String("user", req.Username), zap.Strings("scopes", req.Scopes))
			return None{}, nil
		}})

	// SetPassword sets a stored user's password.
	SetPassword = register(&Op[NewPassword, None]{Name: "set a password", Method: http.MethodPut, Path: "users/{name}/password",
		Run: func(ctx context.Context, env *Env, req NewPassword) (None, error) {
			hash, err := req.hash()
			if err != nil {
				return None{}, err
			}
			if err := env.Keyring.SetPassword(ctx, req.Name, hash); err != nil {
				return None{}, req.notFound(err, "")
			}
			env.event("password changed", zap.String("user", req.Name))
			return None{}, nil
		}})

	// SetUserScopes replaces what a stored user may give keys; keys
	// minted before keep their scopes.
	SetUserScopes = register(&Op[UserScopes, User]{Name: "set a user's scopes", Method: http.MethodPut, Path: "users/{name}/scopes",
		Run: func(ctx context.Context, env *Env, req UserScopes) (User, error) {
			u, err := env.Keyring.SetUserScopes(ctx, req.Name, req.Scopes)
			if err != nil {
				return User{}, req.notFound(err, " (the scopes of users in the config are set there)")
			}
			env.event("user scopes changed", zap.String("user", req.Name), zap.Strings("scopes", req.Scopes))
			return newUser(u), nil
		}})

	// SetUserPlan gives a stored user's keys a plan.
	SetUserPlan = register(&Op[UserPlan, User]{Name: "set a user's plan", Method: http.MethodPut, Path: "users/{name}/plan",
		Run: func(ctx context.Context, env *Env, req UserPlan) (User, error) {
			u, err := env.Keyring.SetUserPlan(ctx, req.Name, req.Plan)
			if err != nil {
				return User{}, req.notFound(err, "")
			}
			env.event("user plan changed", zap.String("user", req.Name), zap.String("plan", req.Plan))
			return newUser(u), nil
		}})

	// RemoveUser removes a stored user and revokes their keys.
	RemoveUser = register(&Op[UserName, Revoked]{Name: "remove a user", Method: http.MethodDelete, Path: "users/{name}",
		Run: func(ctx context.Context, env *Env, req UserName) (Revoked, error) {
			removed, err := env.Keyring.RemoveUser(ctx, req.Name)
			if err != nil {
				return Revoked{}, req.notFound(err, "")
			}
			env.count(func(c Counters) { c.Deleted(len(removed)) })
			env.event("user removed", zap.String("user", req.Name), zap.Int("keys_revoked", len(removed)))
			env.notify(ctx, notify.RevokedEvents(removed, "via", env.Via)...)
			return Revoked{KeysRevoked: len(removed)}, nil
		}})
)
