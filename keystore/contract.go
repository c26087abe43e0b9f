package keystore

import (
	"context"
	"io"
	"time"
)

// What a store backend implements, and the helpers it calls: Store is the
// contract.

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

// Store persists keys, users and credit accounts. It is what a store
// backend implements (with NoticeStore, to keep the notify queue, and
// Watchable, if other processes write the same records); the Keyring and
// the Meter take care of the rest. Every backend must:
//
//   - be safe for concurrent use, from several goroutines and, when the
//     records are shared, from several processes: each method is one
//     atomic transaction, and the checks a method makes (a taken id or
//     digest, the per-owner key limit, a rotation's conditions) hold
//     against every concurrent write, so that of two racing writes that
//     cannot both succeed, exactly one does (keystore/storetest races
//     them);
//   - make every write durable before it reports success (synced to
//     disk, or committed by a quorum); a write retried after its answer
//     was lost must not report its own first try as a conflict
//     (ErrExists, ErrNotFound);
//   - return values that share no memory with the store (copied out of
//     its transactions), in their full precision: times are kept in
//     microseconds (UnixMicros);
//   - return the errors of errors.go that each method names (ErrNotFound,
//     ErrExists, ErrLimit, ErrUnknownOwner, ErrDisabled, ErrRotated),
//     possibly wrapped, so that callers match them with errors.Is; any
//     other error is a storage fault, which callers report as such (a
//     503), and ctx's error when ctx ended first.
//
// codec.go has the stored forms that this module's backends share
// (MarshalKey and the others); a backend may keep records in any form.
// keystore/storetest is the conformance suite: a backend's tests run it
// (storetest.Run) with a fresh store per subtest.
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
	// result atomically; whatever fn does, the key keeps its ID, Hash,
	// Owner, Created, Preview and Stamped (and so its indexes). fn may
	// run more than once (a store may retry after a concurrent change),
	// so it must only set fields; an error from it stores nothing and is
	// returned. ErrNotFound if there is no such key.
	UpdateKey(ctx context.Context, id string, fn func(*Key) error) (Key, error)
	// RotateKey stores next and, in the same transaction, retires the key
	// oldID: it stores Retired(old, retireAt), or deletes it if retireAt
	// is zero. It returns the old key as it was. In that transaction it
	// fails with ErrNotFound if there is no key oldID, with the error of
	// CheckRotatable(old) (ErrDisabled, ErrRotated), with ErrExists if
	// next's ID or Hash is taken, and, when retireAt is set and
	// maxPerOwner > 0, with ErrLimit if the owner already holds
	// maxPerOwner keys (the old one included, since it keeps working
	// through its grace period).
	RotateKey(ctx context.Context, oldID string, next Key, retireAt time.Time, maxPerOwner int) (Key, error)
	// DeleteKey removes the key with the given id, or returns ErrNotFound.
	DeleteKey(ctx context.Context, id string) (Key, error)
	// DeleteKeysOf removes every key of owner and returns them. Keys the
	// owner gains while it runs are removed too.
	DeleteKeysOf(ctx context.Context, owner Owner) ([]Key, error)
	// TouchKeys raises LastUsed of each key id to the given time (never
	// lowers it) in one write; ids that no longer exist are skipped.
	TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error

	// User returns the stored user name, or ErrNotFound.
	User(ctx context.Context, name string) (User, error)
	// Users returns every stored user, by name.
	Users(ctx context.Context) ([]User, error)
	// CreateUser adds u, or returns ErrExists; a name that CheckName
	// refuses is refused with its error.
	CreateUser(ctx context.Context, u User) error
	// UpdateUser applies fn to the stored user name and stores the result
	// atomically; the user keeps its Name and Created whatever fn does.
	// fn may run more than once; an error from it stores nothing and is
	// returned. ErrNotFound if there is no such user.
	UpdateUser(ctx context.Context, name string, fn func(*User) error) (User, error)
	// DeleteUser removes a user and, in the same transaction, all the keys
	// of the password user of that name, which it returns. ErrNotFound if
	// there is no such user.
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

// NoticeStore keeps notices, for a Store that also implements it (both
// backends of this module do); without it, a gateway cannot send
// notifications. Pending notices are kept apart from done ones, so that
// reading the queue costs what is pending, not the days of done notices
// remembered. Each method is atomic and durable, as Store's are.
type NoticeStore interface {
	// AddNotices stores each notice unless one with its endpoint and id
	// is stored already (pending or done): queuing an event twice, from
	// one gateway or several, delivers it once.
	AddNotices(ctx context.Context, notices []Notice) error
	// Notices lists the pending notices of an endpoint.
	Notices(ctx context.Context, endpoint string) ([]Notice, error)
	// UpdateNotice applies fn to a pending notice and writes the result
	// atomically; fn may run more than once (etcd retries it when
	// another gateway wrote the notice meanwhile). An error from fn (such
	// as ErrNoticeBusy) leaves the notice as it is and is returned.
	// ErrNotFound if no such notice is pending. A notice that fn marks
	// Done leaves the queue and is remembered until PruneNotices.
	UpdateNotice(ctx context.Context, endpoint, id string, fn func(*Notice) error) (Notice, error)
	// PruneNotices forgets an endpoint's done notices whose KeepUntil is
	// before now, and returns how many.
	PruneNotices(ctx context.Context, endpoint string, now time.Time) (int, error)
}

// Watchable is implemented by stores that other processes write too, such
// as one etcd cluster shared by several gateways. A Keyring over a
// Watchable store follows its changes, so that a key revoked on any node is
// refused here as soon as the change arrives, and stops trusting its cache
// when it can no longer tell that it has heard of every change.
type Watchable interface {
	// WatchKeys reports changes to keys made by anyone to w until ctx ends.
	// It must call w.ChangesLost whenever it cannot resume where it
	// stopped, and w.CaughtUp regularly while it is following the store.
	WatchKeys(ctx context.Context, w KeyWatcher)
}

// KeyWatcher receives the changes of a Watchable store.
type KeyWatcher interface {
	// KeyCreated says a key with digest h was created.
	KeyCreated(h Hash)
	// KeyChanged says the key with digest h was changed or deleted.
	KeyChanged(h Hash)
	// ChangesLost says some changes may never be reported: whatever was
	// learnt from the store before must be forgotten.
	ChangesLost()
	// CaughtUp says every change committed before the local time at has
	// been reported.
	CaughtUp(at time.Time)
}

// CheckRotatable refuses to rotate a disabled key (ErrDisabled: its
// successor would undo the disabling) or a key rotated already
// (ErrRotated: its grace period would start another chain of working
// keys). Stores call it in Store.RotateKey, inside the rotation's
// transaction.
func CheckRotatable(old Key) error {
	switch {
	case old.Disabled:
		return ErrDisabled
	case old.Rotated:
		return ErrRotated
	}
	return nil
}

// Retired returns old as Store.RotateKey with a grace period leaves it:
// marked rotated, and expiring at retireAt or at its own expiry if
// sooner.
func Retired(old Key, retireAt time.Time) Key {
	old.Rotated = true
	if old.Expires.IsZero() || retireAt.Before(old.Expires) {
		old.Expires = retireAt
	}
	return old
}

// Snapshotter is implemented by stores that can copy every record they
// hold as it is at one moment, for backups: every key, user, credit
// account and notice, in bbolt's file format with the layout of package
// boltstore, so that one restore path serves every backend.
type Snapshotter interface {
	// Snapshot begins the copy. The records are those of one moment
	// (a bbolt read transaction, an etcd revision) however long the copy
	// takes to write out; writes go on meanwhile.
	Snapshot(ctx context.Context) (Snapshot, error)
}

// Snapshot is a consistent copy of a store, ready to be written out.
type Snapshot interface {
	// WriteTo writes the copy, Size bytes. It may be called once.
	WriteTo(w io.Writer) (int64, error)
	// Size is how many bytes WriteTo writes.
	Size() int64
	// Counts says how many records of each kind the copy holds.
	Counts() Counts
	// Close releases what the copy holds (a read transaction, a file).
	Close() error
}

// Counts are how many records of each kind a store or a backup holds.
type Counts struct {
	Keys    int `json:"keys"`
	Users   int `json:"users"`
	Credits int `json:"credit_accounts"`
	// Notices pending, and done ones remembered.
	Notices     int `json:"notices_pending"`
	NoticesDone int `json:"notices_done"`
}

// Empty reports whether there are no records at all.
func (c Counts) Empty() bool { return c == Counts{} }
