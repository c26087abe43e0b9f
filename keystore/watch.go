package keystore

import (
	"context"
	"time"
)

// DefaultMaxStale is how long a Keyring over a Watchable store keeps
// trusting its cache after it last heard that it had every change.
const DefaultMaxStale = 15 * time.Second

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

// keyringWatcher is the Keyring's side of a watch.
type keyringWatcher struct{ kr *Keyring }

// KeyCreated drops only what said the key did not exist: a record cached
// since cannot be older than its creation.
func (w keyringWatcher) KeyCreated(h Hash) { w.kr.cache.forgetUnknown(h) }

func (w keyringWatcher) KeyChanged(h Hash) { w.kr.cache.remove(h) }

func (w keyringWatcher) ChangesLost() {
	w.kr.cache.clear()
	w.kr.cacheResets.Add(1)
}

func (w keyringWatcher) CaughtUp(at time.Time) {
	// Reports may overlap; only ever move forward.
	for {
		cur := w.kr.caughtUp.Load()
		if at.UnixNano() <= cur || w.kr.caughtUp.CompareAndSwap(cur, at.UnixNano()) {
			return
		}
	}
}

// Staleness reports, for a Keyring over a Watchable store, how long ago its
// watch last confirmed having every change (since the Keyring started, if
// never), and how many times it had to forget its whole cache. ok is false
// for other stores, whose cache is always current.
func (kr *Keyring) Staleness() (since time.Duration, resets uint64, ok bool) {
	if !kr.watched {
		return 0, 0, false
	}
	last := max(kr.caughtUp.Load(), kr.started.UnixNano())
	return kr.now().Sub(time.Unix(0, last)), kr.cacheResets.Load(), true
}
