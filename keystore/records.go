package keystore

import "time"

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
// Keyring.VerifyWithin; nil when it has none.
func (k *Key) Limits() *Limits { return k.limits }

// accountID is the id of the counters the key spends from.
func (k *Key) accountID() string {
	if k.Account != "" {
		return k.Account
	}
	return k.ID
}

// usable reports whether k may authenticate a request at time now.
func (k *Key) usable(now time.Time) bool {
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
