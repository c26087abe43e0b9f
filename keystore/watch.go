package keystore

import (
	"time"
)

// defaultMaxStale is how long a Keyring over a Watchable store keeps
// trusting its cache after it last heard that it had every change.
const defaultMaxStale = 15 * time.Second

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
