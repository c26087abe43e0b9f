package keystore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Minted is a newly created key: its record and the plaintext, which
// exists only here and must be shown to the owner exactly once.
type Minted struct {
	Key
	Secret string
}

// Mint creates, stores and returns a new key for the actor's owner, as
// the policy allows: a title, lifetime and scopes within the vocabulary
// and (unless an operator acts) within the actor's grants, and under the
// per-owner cap. A password user's key is minted only while the user
// exists. The key is durable when Mint returns.
func (kr *Keyring) Mint(ctx context.Context, a Actor, req KeyRequest) (Minted, error) {
	if err := a.Owner.Check(); err != nil {
		return Minted{}, err
	}
	a, stored, grants, err := kr.resolve(ctx, a)
	if err != nil {
		return Minted{}, err
	}
	d, err := kr.policy.newKey(kr.now(), a, grants, req)
	if err != nil {
		return Minted{}, err
	}
	m, err := kr.newKey(a.Owner, d)
	if err != nil {
		return Minted{}, err
	}
	if req.Plan != "" {
		if !a.Operator {
			return Minted{}, badRequest("only operators give keys a plan")
		}
		if err := kr.policy.checkPlan(req.Plan); err != nil {
			return Minted{}, err
		}
		m.Plan = req.Plan
	}
	opts := CreateOptions{MaxPerOwner: kr.policy.MaxKeysPerOwner, StoredUser: stored}
	if a.Operator {
		opts.MaxPerOwner = 0
	}
	if err := observeErr(kr, "create_key", func() error { return kr.store.CreateKey(ctx, m.Key, opts) }); err != nil {
		return Minted{}, err
	}
	kr.cache.remove(m.Hash) // in case it was presented before it existed
	return m, nil
}

func (kr *Keyring) newKey(owner Owner, d minted) (Minted, error) {
	// Microsecond precision, the resolution the store keeps.
	created := kr.now().Truncate(time.Microsecond)
	secret, id, err := NewKeyAndID(kr.prefix, created) // one stamp
	if err != nil {
		return Minted{}, err
	}
	k := Key{
		ID:      id,
		Hash:    HashKey(secret),
		Owner:   owner,
		Title:   d.title,
		Preview: Preview(secret, kr.prefix),
		Created: created,
		Expires: d.expires.Truncate(time.Microsecond),
		Scopes:  d.scopes,
		Stamped: true,
	}
	return Minted{Key: k, Secret: secret}, nil
}

// resolve checks that the actor's owner exists and returns the actor
// with its source's lifetime cap, whether the owner is a password user
// kept in the store (not in the configuration), and the scopes it may give
// keys (operators need none).
func (kr *Keyring) resolve(ctx context.Context, a Actor) (Actor, bool, []string, error) {
	if kr.policy.Unknown {
		return a, false, nil, ErrPolicyUnknown
	}
	switch a.Owner.Source {
	case SourcePassword:
		rules, found, err := kr.PasswordUser(ctx, a.Owner.Name)
		if err != nil {
			return a, false, nil, err
		}
		if !found {
			return a, false, nil, ErrUnknownOwner
		}
		grants := rules.Scopes
		if a.FromToken {
			grants = intersect(grants, a.TokenScopes)
		}
		_, configured := kr.policy.ConfigUsers[a.Owner.Name]
		return a, !configured, grants, nil
	case SourceService:
		if !a.Operator {
			return a, false, nil, ErrUnknownOwner
		}
		return a, false, nil, nil
	}
	rules, known := kr.policy.source(a.Owner.Source)
	if !known {
		return a, false, nil, badRequest("no issuer has the namespace %q", a.Owner.Source)
	}
	if a.Operator || a.MaxLifetime == 0 {
		a.MaxLifetime = rules.MaxLifetime
	}
	if a.FromToken {
		return a, false, a.TokenScopes, nil
	}
	return a, false, nil, nil
}

// CheckActor returns ErrUnknownOwner unless the actor's owner exists: a
// token identity filed under the password users must be one, for every
// action, not only minting.
func (kr *Keyring) CheckActor(ctx context.Context, a Actor) error {
	if a.Owner.Source != SourcePassword {
		return nil
	}
	_, found, err := kr.PasswordUser(ctx, a.Owner.Name)
	if err == nil && !found {
		err = ErrUnknownOwner
	}
	return err
}

func intersect(a, b []string) []string {
	var out []string
	for _, s := range a {
		if slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// Rotate replaces the key id with a new one of the same owner, title and
// scopes, minted under today's policy: its scopes must still be allowed
// and within the actor's grants, and its expiry is the old one, capped by
// today's lifetime limits. The old key keeps working for grace (not past
// its own expiry), or stops at once when grace is zero; a key in its
// grace period counts toward the per-owner cap and cannot be rotated
// again. Disabled (ErrDisabled) and expired (ErrExpired) keys cannot be
// rotated, and a non-operator actor can rotate only its own keys (else
// ErrNotFound).
func (kr *Keyring) Rotate(ctx context.Context, a Actor, id string, grace time.Duration) (next Minted, old Key, err error) {
	if old, err = kr.owned(ctx, a, id); err != nil {
		return Minted{}, Key{}, err
	}
	now := kr.now()
	if err := CheckRotatable(old); err != nil {
		return Minted{}, Key{}, err
	}
	if !old.usable(now) {
		return Minted{}, Key{}, ErrExpired
	}
	if a.Operator {
		a.Owner = old.Owner
	}
	a, _, grants, err := kr.resolve(ctx, a)
	if err != nil {
		return Minted{}, Key{}, err
	}
	d, err := kr.policy.successor(now, a, grants, old)
	if err != nil {
		return Minted{}, Key{}, err
	}
	if next, err = kr.newKey(old.Owner, d); err != nil {
		return Minted{}, Key{}, err
	}
	// The successor spends from the same counters and keeps its plan:
	// rotating must not refill credits or reset rate limits.
	next.Account, next.Plan = old.accountID(), old.Plan
	var retireAt time.Time
	limit := 0
	if grace > 0 {
		retireAt = now.Add(grace).Truncate(time.Microsecond)
		if !a.Operator {
			limit = kr.policy.MaxKeysPerOwner
		}
	}
	if old, err = observe(kr, "rotate_key", func() (Key, error) { return kr.store.RotateKey(ctx, id, next.Key, retireAt, limit) }); err != nil {
		return Minted{}, Key{}, err
	}
	kr.cache.remove(old.Hash)
	kr.cache.remove(next.Hash)
	return next, old, nil
}

// owned returns the key id if the actor may act on it: operators on any
// key, owners on their own. Anything else is ErrNotFound, so that other
// owners' key ids cannot be probed.
func (kr *Keyring) owned(ctx context.Context, a Actor, id string) (Key, error) {
	k, err := observe(kr, "key_by_id", func() (Key, error) { return kr.store.KeyByID(ctx, id) })
	if err != nil {
		return Key{}, err
	}
	if !a.Operator && k.Owner != a.Owner {
		return Key{}, ErrNotFound
	}
	return k, nil
}

// Delete removes the key id, if the actor may act on it; the next verification
// of it fails.
func (kr *Keyring) Delete(ctx context.Context, a Actor, id string) (Key, error) {
	if _, err := kr.owned(ctx, a, id); err != nil {
		return Key{}, err
	}
	k, err := observe(kr, "delete_key", func() (Key, error) { return kr.store.DeleteKey(ctx, id) })
	if err != nil {
		return Key{}, err
	}
	kr.cache.remove(k.Hash)
	return k, nil
}

// RevokeOwner removes every key of owner, whatever its source, and
// returns them.
func (kr *Keyring) RevokeOwner(ctx context.Context, owner Owner) ([]Key, error) {
	removed, err := observe(kr, "delete_keys_of", func() ([]Key, error) { return kr.store.DeleteKeysOf(ctx, owner) })
	for _, k := range removed {
		kr.cache.remove(k.Hash)
	}
	return removed, err
}

// ChangeDisabled disables or re-enables the key id, and reports whether
// the key changed (false when it already was so: nothing is written); a
// disabled key is refused from the next verification on. A key reported
// leaked cannot be enabled (ErrLeaked). Only operators do this.
func (kr *Keyring) ChangeDisabled(ctx context.Context, id string, disabled bool) (k Key, changed bool, err error) {
	k, err = observe(kr, "update_key", func() (Key, error) {
		return kr.store.UpdateKey(ctx, id, func(k *Key) error {
			if k.Leaked && !disabled {
				return ErrLeaked
			}
			if k.Disabled == disabled {
				return errUnchanged
			}
			k.Disabled = disabled
			return nil
		})
	})
	if errors.Is(err, errUnchanged) {
		k, err = kr.KeyByID(ctx, id)
		return k, false, err
	}
	if err != nil {
		return Key{}, false, err
	}
	kr.cache.remove(k.Hash)
	return k, true, nil
}

// LeakReport is what became of a secret reported found in public.
type LeakReport struct {
	// Key is the store's key the secret is, if Found.
	Key Key
	// Found: the secret is one of the store's keys.
	Found bool
	// Changed: this report disabled the key or marked it leaked; false
	// when it already was (a replay, or another gateway was first).
	Changed bool
}

// ReportLeak handles a secret that a scanner found in public: if it is
// one of the store's keys, the key is disabled at once (for every
// gateway sharing the store), and, unless disableOnly, marked leaked so
// that it can never be enabled again. Nothing is written for secrets
// that are not (or no longer) keys here, nor for a key already so.
func (kr *Keyring) ReportLeak(ctx context.Context, secret string, disableOnly bool) (LeakReport, error) {
	if err := ParseKey(secret, kr.prefix); err != nil {
		return LeakReport{}, nil
	}
	h := HashKey(secret)
	stored, err := observe(kr, "key_by_hash", func() (Key, error) { return kr.store.KeyByHash(ctx, h, StampOf(secret, kr.prefix)) })
	if errors.Is(err, ErrNotFound) {
		return LeakReport{}, nil
	}
	if err != nil {
		return LeakReport{}, err
	}
	return kr.markLeaked(ctx, stored, disableOnly)
}

// ReportLeakedHashes is ReportLeak for keys known by their digests, as the
// CLI's scanner sends them (the keys themselves need not travel): one
// report per digest, in order.
func (kr *Keyring) ReportLeakedHashes(ctx context.Context, hs []Hash, disableOnly bool) ([]LeakReport, error) {
	// The records as stored: whether their owners still exist does not
	// matter to a leak, so KeysByHash's owner lookups are not paid for.
	stored, err := observe(kr, "keys_by_hash", func() ([]Key, error) { return kr.store.KeysByHash(ctx, hs) })
	if err != nil {
		return nil, err
	}
	out := make([]LeakReport, len(hs))
	for i, k := range stored {
		if k.ID == "" {
			continue
		}
		if out[i], err = kr.markLeaked(ctx, k, disableOnly); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// markLeaked disables stored and, unless disableOnly, marks it leaked.
func (kr *Keyring) markLeaked(ctx context.Context, stored Key, disableOnly bool) (LeakReport, error) {
	already := func(k *Key) bool { return k.Disabled && (k.Leaked || disableOnly) }
	if already(&stored) {
		return LeakReport{Key: stored, Found: true}, nil
	}
	k, err := observe(kr, "update_key", func() (Key, error) {
		return kr.store.UpdateKey(ctx, stored.ID, func(k *Key) error {
			if already(k) {
				return errUnchanged // another report was first
			}
			k.Disabled = true
			k.Leaked = k.Leaked || !disableOnly
			return nil
		})
	})
	switch {
	case errors.Is(err, ErrNotFound): // deleted meanwhile
		return LeakReport{}, nil
	case errors.Is(err, errUnchanged):
		k, err := kr.KeyByID(ctx, stored.ID)
		return LeakReport{Key: k, Found: err == nil}, ignoreNotFound(err)
	case err != nil:
		return LeakReport{}, err
	}
	kr.cache.remove(stored.Hash)
	return LeakReport{Key: k, Found: true, Changed: true}, nil
}

func ignoreNotFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// KeysByHash returns the stored key each digest names (whether or not it
// would verify), with its pending last-used time and Orphaned set, or a
// zero Key (empty ID) for a digest that names none.
func (kr *Keyring) KeysByHash(ctx context.Context, hs []Hash) ([]Key, error) {
	keys, err := observe(kr, "keys_by_hash", func() ([]Key, error) { return kr.store.KeysByHash(ctx, hs) })
	if err != nil {
		return nil, err
	}
	found := make([]Key, 0, len(keys))
	for _, k := range keys {
		if k.ID != "" {
			found = append(found, k)
		}
	}
	if err := kr.annotate(ctx, found); err != nil {
		return nil, err
	}
	for i := range keys {
		if keys[i].ID != "" {
			keys[i], found = found[0], found[1:]
		}
	}
	return keys, nil
}

// KeyByID returns the key id with any pending last-used time applied.
func (kr *Keyring) KeyByID(ctx context.Context, id string) (Key, error) {
	k, err := observe(kr, "key_by_id", func() (Key, error) { return kr.store.KeyByID(ctx, id) })
	if err != nil {
		return Key{}, err
	}
	kr.applyPendingUse(&k)
	return k, nil
}

// Keys lists every key, oldest first, with pending last-used times and
// Orphaned set.
func (kr *Keyring) Keys(ctx context.Context) ([]Key, error) {
	keys, err := observe(kr, "keys", func() ([]Key, error) { return kr.store.Keys(ctx) })
	if err != nil {
		return nil, err
	}
	return keys, kr.annotate(ctx, keys)
}

// KeysByOwner lists owner's keys, oldest first, with pending last-used
// times and Orphaned set.
func (kr *Keyring) KeysByOwner(ctx context.Context, owner Owner) ([]Key, error) {
	keys, err := observe(kr, "keys_by_owner", func() ([]Key, error) { return kr.store.KeysByOwner(ctx, owner) })
	if err != nil {
		return nil, err
	}
	return keys, kr.annotate(ctx, keys)
}

func (kr *Keyring) annotate(ctx context.Context, keys []Key) error {
	orphans := make(map[Owner]bool)
	for i := range keys {
		k := &keys[i]
		kr.applyPendingUse(k)
		orphaned, seen := orphans[k.Owner]
		if !seen {
			var err error
			if orphaned, err = kr.orphaned(ctx, k.Owner); err != nil {
				return err
			}
			orphans[k.Owner] = orphaned
		}
		k.Orphaned = orphaned
	}
	return nil
}

// orphaned reports whether owner no longer exists: a password user gone
// from the configuration and the store, or an identity of an issuer the
// configuration no longer has. Services exist as long as their keys do.
func (kr *Keyring) orphaned(ctx context.Context, owner Owner) (bool, error) {
	orphaned, _, err := kr.ownerState(ctx, owner)
	return orphaned, err
}

// ownerState reports whether owner no longer exists (see orphaned), and
// else the plan its keys follow unless a key has its own ("": the default
// plan).
func (kr *Keyring) ownerState(ctx context.Context, owner Owner) (orphaned bool, plan string, err error) {
	switch {
	case kr.policy.Unknown, owner.Source == SourceService:
		return false, "", nil
	case owner.Source != SourcePassword:
		rules, known := kr.policy.source(owner.Source)
		return !known, rules.Plan, nil
	}
	rules, found, err := kr.PasswordUser(ctx, owner.Name)
	return !found, rules.Plan, err
}

// PasswordUser reports whether the password user name exists, in the
// configuration (first) or in the store, with the scopes it may give keys
// and its plan.
func (kr *Keyring) PasswordUser(ctx context.Context, name string) (rules UserRules, found bool, err error) {
	if rules, ok := kr.policy.ConfigUsers[name]; ok {
		return rules, true, nil
	}
	u, err := observe(kr, "user", func() (User, error) { return kr.store.User(ctx, name) })
	if errors.Is(err, ErrNotFound) {
		return UserRules{}, false, nil
	}
	if err != nil {
		return UserRules{}, false, err
	}
	return UserRules{Scopes: u.Scopes, Plan: u.Plan}, true, nil
}

// Orphans says what AddUser does with keys of a former user of the same
// name, which are refused as orphaned.
type Orphans int

// What AddUser does with orphaned keys of the name.
const (
	// RefuseOrphans fails with an *OrphansError: a new user must not
	// inherit keys someone else may hold.
	RefuseOrphans Orphans = iota
	// AdoptOrphans makes them the new user's: it is the same person, as
	// when a user moves from one gateway's configuration to the store.
	AdoptOrphans
	// RevokeOrphans deletes them first.
	RevokeOrphans
)

// OrphansError refuses to add a user whose name has orphaned keys.
type OrphansError struct {
	Name string
	Keys int
}

func (e *OrphansError) Error() string {
	return fmt.Sprintf("%d keys of a former user %s remain; say whether the new user adopts them or they are revoked", e.Keys, strconv.Quote(e.Name))
}

// AddUser stores a password user, whose name and scopes must pass the
// policy and whose name the configuration must not declare; orphans says
// what becomes of keys of a former user of that name.
func (kr *Keyring) AddUser(ctx context.Context, u User, orphans Orphans) error {
	if err := CheckName(u.Name); err != nil {
		return err
	}
	if kr.policy.Unknown && (len(u.Scopes) > 0 || u.Plan != "") {
		return ErrPolicyUnknown
	}
	if _, ok := kr.policy.ConfigUsers[u.Name]; ok {
		return ErrConfigUser
	}
	if err := kr.policy.checkVocabulary(u.Scopes); err != nil {
		return err
	}
	if err := kr.policy.checkPlan(u.Plan); err != nil {
		return err
	}
	old, err := observe(kr, "keys_by_owner", func() ([]Key, error) { return kr.store.KeysByOwner(ctx, PasswordUser(u.Name)) })
	if err != nil {
		return err
	}
	if len(old) > 0 {
		if _, err := observe(kr, "user", func() (User, error) { return kr.store.User(ctx, u.Name) }); err == nil {
			return ErrExists
		}
		switch orphans {
		case RefuseOrphans:
			return &OrphansError{Name: u.Name, Keys: len(old)}
		case RevokeOrphans:
			if _, err := kr.RevokeOwner(ctx, PasswordUser(u.Name)); err != nil {
				return err
			}
		}
	}
	if err := observeErr(kr, "create_user", func() error { return kr.store.CreateUser(ctx, u) }); err != nil {
		return err
	}
	kr.cache.clear()
	return nil
}

// SetUserScopes replaces the scopes a stored user may give keys. Keys
// minted before keep theirs.
func (kr *Keyring) SetUserScopes(ctx context.Context, name string, scopes []string) (User, error) {
	if kr.policy.Unknown {
		return User{}, ErrPolicyUnknown
	}
	if _, ok := kr.policy.ConfigUsers[name]; ok {
		return User{}, ErrConfigUser
	}
	if err := kr.policy.checkVocabulary(scopes); err != nil {
		return User{}, err
	}
	return observe(kr, "update_user", func() (User, error) {
		return kr.store.UpdateUser(ctx, name, func(u *User) error {
			u.Scopes = scopes
			return nil
		})
	})
}

// SetPassword replaces a stored user's password hash.
func (kr *Keyring) SetPassword(ctx context.Context, name, hash string) error {
	_, err := observe(kr, "update_user", func() (User, error) {
		return kr.store.UpdateUser(ctx, name, func(u *User) error {
			u.PasswordHash = hash
			return nil
		})
	})
	return err
}

// RemoveUser deletes a stored user and revokes all their keys.
func (kr *Keyring) RemoveUser(ctx context.Context, name string) ([]Key, error) {
	removed, err := observe(kr, "delete_user", func() ([]Key, error) { return kr.store.DeleteUser(ctx, name) })
	for _, k := range removed {
		kr.cache.remove(k.Hash)
	}
	return removed, err
}

// PlanOf returns the plan k follows: its own, its owner's, or the
// default; nil without one.
func (kr *Keyring) PlanOf(ctx context.Context, k Key) (*Plan, error) {
	_, plan, err := kr.ownerState(ctx, k.Owner)
	if err != nil {
		return nil, err
	}
	if k.Plan != "" {
		plan = k.Plan
	}
	return kr.policy.plan(plan), nil
}

// creditAccount returns the credit account k spends from under plan and
// its terms; ok is false when the plan has no credits.
func creditAccount(k Key, plan *Plan) (id string, terms creditTerms, ok bool) {
	if plan == nil || plan.Credits == nil {
		return "", creditTerms{}, false
	}
	c := plan.Credits
	terms = creditTerms{Amount: c.Amount, Refill: c.Refill, Anchor: k.Created}
	if c.PerOwner {
		return ownerAccount(k.Owner), creditTerms{Amount: c.Amount, Refill: c.Refill}, true
	}
	return k.accountID(), terms, true
}

// Balance is a key's credits as views show them.
type Balance struct {
	// Remaining credits: the store's balance and what this process holds
	// unspent.
	Remaining int64
	// NextRefill is when the balance is next replaced; zero if never.
	NextRefill time.Time
	// Amount is what a refill gives.
	Amount int64
	// Refill is the time between refills; zero if never.
	Refill time.Duration
	// Shared says the balance is the owner's, shared by all its keys.
	Shared bool
}

// BalanceOf returns k's credits; ok is false when its plan has none.
func (kr *Keyring) BalanceOf(ctx context.Context, k Key) (b Balance, ok bool, err error) {
	plan, err := kr.PlanOf(ctx, k)
	if err != nil {
		return Balance{}, false, err
	}
	id, terms, ok := creditAccount(k, plan)
	if !ok {
		return Balance{}, false, nil
	}
	now := kr.now()
	acct, remaining, next, err := kr.storedBalance(ctx, id, terms, now)
	if err != nil {
		return Balance{}, true, err
	}
	return Balance{Remaining: addSaturating(remaining, kr.meter.unspentOf(id, acct, terms, now)), NextRefill: next, Refill: terms.Refill,
		Amount: terms.Amount, Shared: plan.Credits.PerOwner}, true, nil
}

// AdjustCredits sets k's balance to amount (set), voiding the blocks that
// gateways hold, or adds amount to it (negative: takes, not below 0).
// Only operators do this.
func (kr *Keyring) AdjustCredits(ctx context.Context, k Key, amount int64, set bool) (Balance, error) {
	plan, err := kr.PlanOf(ctx, k)
	if err != nil {
		return Balance{}, err
	}
	id, terms, ok := creditAccount(k, plan)
	if !ok {
		return Balance{}, ErrNoCredits
	}
	if set && amount < 0 {
		return Balance{}, badRequest("a balance must not be negative")
	}
	now := kr.now()
	acct, err := observe(kr, "update_credits", func() (CreditAccount, error) {
		return kr.store.UpdateCredits(ctx, id, func(a *CreditAccount, exists bool) error {
			a.openOrRefill(exists, terms, now)
			switch {
			case set:
				a.Balance = amount
				a.Gen++
			case amount > 0 && a.Balance > math.MaxInt64-amount:
				return badRequest("the balance would exceed %d credits: it holds %d", int64(math.MaxInt64), a.Balance)
			default:
				a.Balance = max(a.Balance+amount, 0)
			}
			return nil
		})
	})
	if err != nil {
		return Balance{}, err
	}
	if set {
		kr.meter.void(id)
	} else {
		kr.meter.recheck(id)
	}
	b := Balance{Remaining: acct.Balance, NextRefill: acct.nextRefill(terms, now), Refill: terms.Refill, Amount: terms.Amount, Shared: plan.Credits.PerOwner}
	if !set {
		b, _, err = kr.BalanceOf(ctx, k)
	}
	return b, err
}

// SetKeyPlan gives the key id a plan of its own ("" for its owner's or
// the default). Only operators do this.
func (kr *Keyring) SetKeyPlan(ctx context.Context, id, plan string) (Key, error) {
	if kr.policy.Unknown {
		return Key{}, ErrPolicyUnknown
	}
	if err := kr.policy.checkPlan(plan); err != nil {
		return Key{}, err
	}
	k, err := observe(kr, "update_key", func() (Key, error) {
		return kr.store.UpdateKey(ctx, id, func(k *Key) error {
			k.Plan = plan
			return nil
		})
	})
	if err != nil {
		return Key{}, err
	}
	kr.cache.remove(k.Hash)
	return k, nil
}

// SetUserPlan gives a stored user's keys a plan ("" for the default).
// Keys with a plan of their own keep it.
func (kr *Keyring) SetUserPlan(ctx context.Context, name, plan string) (User, error) {
	if kr.policy.Unknown {
		return User{}, ErrPolicyUnknown
	}
	if _, ok := kr.policy.ConfigUsers[name]; ok {
		return User{}, ErrConfigUser
	}
	if err := kr.policy.checkPlan(plan); err != nil {
		return User{}, err
	}
	u, err := observe(kr, "update_user", func() (User, error) {
		return kr.store.UpdateUser(ctx, name, func(u *User) error {
			u.Plan = plan
			return nil
		})
	})
	if err == nil {
		kr.cache.clear()
	}
	return u, err
}

// StoredUser returns the user kept in the store under name; ErrNotFound
// if there is none (users of the config are not stored).
func (kr *Keyring) StoredUser(ctx context.Context, name string) (User, error) {
	return observe(kr, "user", func() (User, error) { return kr.store.User(ctx, name) })
}

// StoredUsers returns every user kept in the store.
func (kr *Keyring) StoredUsers(ctx context.Context) ([]User, error) {
	return observe(kr, "users", func() ([]User, error) { return kr.store.Users(ctx) })
}

// addSaturating is a+b for non-negative a and b, at most math.MaxInt64.
func addSaturating(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
