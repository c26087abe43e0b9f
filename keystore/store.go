// Package keystore mints, stores and verifies API keys. It holds the key
// format, owners and the key Policy (who may hold and grant what), the
// Keyring that puts an in-memory cache and last-used coalescing in front
// of a Store, and the Meter that holds keys to their plans' rate limits
// and credits. It has no dependency on Caddy, and keeps no records
// itself: backends implement its Store interface (boltstore, a bbolt
// file; etcdstore, a cluster), and the suite in keystore/storetest checks
// that they keep its contract. record.go holds the stored forms they
// share.
package keystore

import (
	"context"
	"time"
)

// CreateOptions are the conditions under which Store.CreateKey stores a
// key, checked in the transaction that stores it.
type CreateOptions struct {
	// MaxPerOwner, if positive, fails the creation with ErrLimit when the
	// owner already holds that many keys.
	MaxPerOwner int
	// StoredUser fails the creation with ErrUnknownOwner unless the key's
	// owner, a password user, is in the store: a key minted while its user
	// is being removed is then either removed with the user or not
	// created.
	StoredUser bool
}

// Key is the stored record of one API key. It never holds the key itself,
// only its SHA-256 digest.
type Key struct {
	// ID is the public 32-character base62 identifier.
	ID string
	// Hash is the SHA-256 digest of the full key string.
	Hash Hash
	// Owner is who the key acts for.
	Owner Owner
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
	// Leaked keys were reported found in public by a secret scanner:
	// they are disabled for good (they cannot be enabled or rotated) and
	// kept so that their owners see what happened.
	Leaked bool
	// Rotated keys were replaced by a rotation and work only until
	// Expires, the end of their grace period; they cannot be rotated
	// again.
	Rotated bool
	// Plan is the plan an operator gave this key; empty means its
	// owner's, or the default plan.
	Plan string
	// Account names the rate and credit counters the key spends from: the
	// id of the key whose rotation made this one, so that rotating never
	// refills them; empty means the key's own id.
	Account string
	// Stamped keys' text begins with the creation stamp their ID begins
	// with (StampOf), as every key minted since stamps does; a store may
	// then index them by stamp and digest. Keys minted before, or brought
	// in from elsewhere, are not stamped.
	Stamped bool

	// Orphaned is set by Keyring listings, never stored: the key belongs
	// to a password user who no longer exists, so it is refused.
	Orphaned bool

	// memos are the values of every Memo, built once when a verified key
	// is cached.
	memos []any
	// limits are the counters of its plan, set when a verified key is
	// cached by a Keyring with a Meter.
	limits *Limits
	// ownerCheckedAt is when a cached key was found orphaned (Unix
	// nanoseconds), so that the owner is looked up again later.
	ownerCheckedAt int64
}

// Limits returns the counters of the plan of a key returned by
// Keyring.Verify; nil when it has none.
func (k *Key) Limits() *Limits { return k.limits }

// AccountID is the id of the counters the key spends from.
func (k *Key) AccountID() string {
	if k.Account != "" {
		return k.Account
	}
	return k.ID
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
	// Scopes the user may give their keys.
	Scopes []string
	// Plan the user's keys follow unless a key has its own; empty means
	// the default plan.
	Plan string
	// Created is when the user was added.
	Created time.Time
}

// Store persists keys and users. Implementations must be safe for
// concurrent use, copy values out of their transactions, and make every
// write durable before returning.
type Store interface {
	// CreateKey stores k atomically: ErrExists if its ID or Hash is taken,
	// and, in the same transaction, the checks of opts. A stamped k must
	// be what Key.Stamped says (its text begins with its ID's stamp):
	// a store may then look for its digest under that stamp only.
	CreateKey(ctx context.Context, k Key, opts CreateOptions) error
	// KeyByHash returns the key with digest h, or ErrNotFound. stamp is
	// StampOf the key's text when the text is at hand, or "" when only
	// the digest is known (a store may then take longer).
	KeyByHash(ctx context.Context, h Hash, stamp string) (Key, error)
	// KeysByHash returns the key each digest in hs names, in order, with
	// a zero Key (empty ID) for a digest that names none.
	KeysByHash(ctx context.Context, hs []Hash) ([]Key, error)
	// KeyByID returns the key with the given id, or ErrNotFound.
	KeyByID(ctx context.Context, id string) (Key, error)
	// KeysByOwner returns owner's keys, oldest first.
	KeysByOwner(ctx context.Context, owner Owner) ([]Key, error)
	// Keys returns every key, oldest first.
	Keys(ctx context.Context) ([]Key, error)
	// UpdateKey applies fn to the key with the given id and stores the
	// result atomically; fn may change Title, Expires, Scopes, Plan and
	// Disabled only. fn may run more than once (a store may retry after
	// a concurrent change), so it must only set fields. ErrNotFound if
	// there is no such key.
	UpdateKey(ctx context.Context, id string, fn func(*Key) error) (Key, error)
	// RotateKey stores next and, in the same transaction, retires the key
	// oldID: it marks it Rotated and makes it expire at retireAt, or
	// deletes it if retireAt is zero. It returns the old key as it was.
	// In that transaction it fails with ErrDisabled if the old key is
	// disabled, with ErrRotated if it was rotated already, and, when
	// retireAt is set and maxPerOwner > 0, with ErrLimit if the owner
	// already holds maxPerOwner keys (the old one included, since it
	// keeps working through its grace period).
	RotateKey(ctx context.Context, oldID string, next Key, retireAt time.Time, maxPerOwner int) (Key, error)
	// DeleteKey removes the key with the given id, or returns ErrNotFound.
	DeleteKey(ctx context.Context, id string) (Key, error)
	// DeleteKeysOf removes every key of owner and returns them. Keys the
	// owner gains while it runs are removed too.
	DeleteKeysOf(ctx context.Context, owner Owner) ([]Key, error)
	// TouchKeys raises last_used of each key id to the given time in one
	// write; ids that no longer exist are skipped.
	TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error

	// User returns the stored user name, or ErrNotFound.
	User(ctx context.Context, name string) (User, error)
	// Users returns every stored user, by name.
	Users(ctx context.Context) ([]User, error)
	// CreateUser adds u, or returns ErrExists.
	CreateUser(ctx context.Context, u User) error
	// UpdateUser applies fn to the stored user name and stores the result
	// atomically; fn may change PasswordHash, Scopes and Plan only, and
	// may run more than once. ErrNotFound if there is no such user.
	UpdateUser(ctx context.Context, name string, fn func(*User) error) (User, error)
	// DeleteUser removes a user and all the keys of the password user of
	// that name, which it returns. ErrNotFound if there is no such user.
	DeleteUser(ctx context.Context, name string) ([]Key, error)

	// UpdateCredits applies fn to the credit account id (a zero account
	// with exists false when there is none) and stores the result
	// atomically. fn may run more than once; an error from it stores
	// nothing and is returned.
	UpdateCredits(ctx context.Context, id string, fn func(a *CreditAccount, exists bool) error) (CreditAccount, error)
	// CreditAccount returns the credit account id, or ErrNotFound.
	CreditAccount(ctx context.Context, id string) (CreditAccount, error)
	// CreditAccounts returns every credit account, by id.
	CreditAccounts(ctx context.Context) ([]CreditAccount, error)

	// Close releases the store. It is called once, by whoever opened it.
	Close() error
}
