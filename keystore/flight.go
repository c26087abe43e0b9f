package keystore

import (
	"context"
	"errors"
	"strconv"

	"golang.org/x/sync/singleflight"
)

// readKeyShared reads the key with digest h (and stamp, StampOf its text)
// from the store, sharing one
// read among all the lookups of h that miss the cache at once: a flood of
// one unknown key costs the store one read at a time, not one per
// request. gen is the cache generation the caller took before the read; a
// lookup that starts after h was invalidated has another generation, and
// so never receives the answer of a read that began before.
//
// The shared read does not end when the caller that started it goes
// away; a caller that goes away stops waiting for it.
func (kr *Keyring) readKeyShared(ctx context.Context, h Hash, stamp string, gen uint64) (Key, error) {
	ch := kr.reads.DoChan(string(h[:])+strconv.FormatUint(gen, 10), func() (any, error) {
		// A caller that missed the cache just before a read of h ended
		// starts a read of its own: the answer is in the cache by now if
		// the key does not exist, so a flood of one unknown key costs one
		// read, however the requests fall around it.
		if k, ok := kr.cache.get(h); ok && k == nil && kr.cache.generation(h) == gen && kr.cacheTrusted(kr.now()) {
			return Key{}, ErrNotFound
		}
		k, err := observe(kr, "key_by_hash", func() (Key, error) { return kr.store.KeyByHash(context.WithoutCancel(ctx), h, stamp) })
		if errors.Is(err, ErrNotFound) {
			kr.cache.put(h, nil, gen) // before the read is forgotten
		}
		return k, err
	})
	select {
	case r := <-ch:
		k, _ := r.Val.(Key)
		return k, r.Err
	case <-ctx.Done():
		return Key{}, ctx.Err()
	}
}

// sharedReads is the Keyring's group of store reads in flight.
type sharedReads = singleflight.Group
