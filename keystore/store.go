// Package keystore mints, stores and verifies API keys. It holds the key
// format, the Store interface with its bbolt implementation, and the
// Keyring that puts an in-memory cache and last-used coalescing in front of
// a Store. It has no dependency on Caddy.
package keystore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Errors returned by Store implementations. Callers match them with
// errors.Is; any other error is a storage fault.
var (
	// ErrNotFound means no key or user matched.
	ErrNotFound = errors.New("not found")
	// ErrExists means a key id or hash, or a username, is already taken.
	ErrExists = errors.New("already exists")
)

// ErrLimit means the owner already has the maximum number of keys.
var ErrLimit = errors.New("key limit reached")

// Key is the stored record of one API key. It never holds the key itself,
// only its SHA-256 digest.
type Key struct {
	// ID is the public 32-character base62 identifier.
	ID string
	// Hash is the SHA-256 digest of the full key string.
	Hash Hash
	// Owner is the username the key acts for.
	Owner string
	// Title is the owner's label for the key.
	Title string
	// Preview is the displayable form, e.g. "sk-...JfaN".
	Preview string
	// Created is when the key was minted.
	Created time.Time
	// LastUsed is when the key last authenticated a request; zero if never.
	LastUsed time.Time
	// Expires is when the key stops being valid; zero means never.
	Expires time.Time
	// Scopes the key grants; routes may require some of them.
	Scopes []string
	// Disabled keys are kept but refused.
	Disabled bool

	// attributes is built once when a verified key is cached.
	attributes map[string]string
}

// Attributes returns "key_id", "key_title" and, if it has any,
// "key_scopes" (space separated) of a key returned by Keyring.Verify, for callers that expose
// them as request placeholders. The map is shared by every request using
// the key and must not be modified.
func (k *Key) Attributes() map[string]string {
	if k.attributes == nil {
		return k.buildAttributes()
	}
	return k.attributes
}

func (k *Key) buildAttributes() map[string]string {
	attrs := map[string]string{"key_id": k.ID, "key_title": k.Title}
	if len(k.Scopes) > 0 { // each attribute costs a placeholder per request
		attrs["key_scopes"] = strings.Join(k.Scopes, " ")
	}
	return attrs
}

// HasScopes reports whether the key grants every one of want.
func (k *Key) HasScopes(want []string) bool {
	for _, w := range want {
		if !slices.Contains(k.Scopes, w) {
			return false
		}
	}
	return true
}

// Usable reports whether k may authenticate a request at time now.
func (k *Key) Usable(now time.Time) bool {
	return !k.Disabled && (k.Expires.IsZero() || now.Before(k.Expires))
}

// User is a username with a password hash kept in the store.
type User struct {
	// Name is the unique username.
	Name string
	// PasswordHash is a bcrypt or argon2id (PHC) hash.
	PasswordHash string
	// Created is when the user was added.
	Created time.Time
}

// Store persists keys and users. Implementations must be safe for
// concurrent use, copy values out of their transactions, and make every
// write durable before returning.
type Store interface {
	// CreateKey stores k atomically: ErrExists if its ID or Hash is taken,
	// ErrLimit if maxPerOwner > 0 and the owner already has that many keys.
	CreateKey(ctx context.Context, k Key, maxPerOwner int) error
	// KeyByHash returns the key with digest h, or ErrNotFound.
	KeyByHash(ctx context.Context, h Hash) (Key, error)
	// KeyByID returns the key with the given id, or ErrNotFound.
	KeyByID(ctx context.Context, id string) (Key, error)
	// KeysByOwner returns owner's keys, oldest first.
	KeysByOwner(ctx context.Context, owner string) ([]Key, error)
	// Keys returns every key, oldest first.
	Keys(ctx context.Context) ([]Key, error)
	// UpdateKey applies fn to the key with the given id and stores the
	// result atomically; fn may change Title, Expires, Scopes and
	// Disabled only. ErrNotFound if there is no such key.
	UpdateKey(ctx context.Context, id string, fn func(*Key) error) (Key, error)
	// RotateKey stores next and, in the same transaction, makes the key
	// oldID expire at oldExpires, or deletes it if oldExpires is zero.
	// It returns the old key as it was.
	RotateKey(ctx context.Context, oldID string, next Key, oldExpires time.Time) (Key, error)
	// DeleteKey removes the key with the given id, or returns ErrNotFound.
	DeleteKey(ctx context.Context, id string) (Key, error)
	// TouchKeys raises last_used of each key id to the given time in one
	// write; ids that no longer exist are skipped.
	TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error

	// User returns the stored user name, or ErrNotFound.
	User(ctx context.Context, name string) (User, error)
	// Users returns every stored user, by name.
	Users(ctx context.Context) ([]User, error)
	// CreateUser adds u, or returns ErrExists.
	CreateUser(ctx context.Context, u User) error
	// SetPassword replaces a user's password hash, or returns ErrNotFound.
	SetPassword(ctx context.Context, name, hash string) error
	// DeleteUser removes a user and, in the same transaction, all their
	// keys, which it returns. ErrNotFound if there is no such user.
	DeleteUser(ctx context.Context, name string) ([]Key, error)

	// Close releases the store. It is called once, by whoever opened it.
	Close() error
}
