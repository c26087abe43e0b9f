package keystore

import (
	"sync"
	"sync/atomic"
)

// keyCache is a bounded map from key digest to record, with a smaller map
// of digests known not to exist so that a flood of unknown keys neither
// reaches the store each time nor evicts known keys. When a map is full it
// drops a tenth of its entries, chosen at random (see randomMap): no
// bookkeeping on the read path, and the store answers any miss.
//
// A lookup that misses reads the store and then fills the cache. So that a
// change reported while that read is in flight cannot be overwritten by
// the older answer, every invalidation bumps a generation counter of the
// digest's stripe, and a fill is dropped if its stripe moved since the
// read began.
type keyCache struct {
	mu         sync.RWMutex
	max        int
	maxUnknown int
	keys       randomMap[*Key]
	unknown    randomMap[struct{}]
	gens       [256]atomic.Uint64
}

func newKeyCache(size int) *keyCache {
	return &keyCache{
		max:        size,
		maxUnknown: max(size/4, 1),
		keys:       newRandomMap[*Key](),
		unknown:    newRandomMap[struct{}](),
	}
}

// get returns the cached record for h; a nil record with ok means h is
// known not to exist.
func (c *keyCache) get(h Hash) (k *Key, ok bool) {
	c.mu.RLock()
	k, ok = c.keys.get(h)
	if !ok {
		_, ok = c.unknown.get(h)
	}
	c.mu.RUnlock()
	return k, ok
}

// generation returns the token a fill of h must present; take it before
// reading the store.
func (c *keyCache) generation(h Hash) uint64 { return c.gens[h[0]].Load() }

// put caches k (nil: h does not exist) unless h was invalidated since gen.
func (c *keyCache) put(h Hash, k *Key, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gens[h[0]].Load() != gen {
		return
	}
	if k == nil {
		c.unknown.put(h, struct{}{}, c.maxUnknown)
		return
	}
	c.keys.put(h, k, c.max)
}

// remove forgets h, and any fill of h that began before.
func (c *keyCache) remove(h Hash) {
	c.mu.Lock()
	c.gens[h[0]].Add(1)
	c.keys.delete(h)
	c.unknown.delete(h)
	c.mu.Unlock()
}

// forgetUnknown forgets that h does not exist, and any fill of h that
// began before, but keeps a record of h.
func (c *keyCache) forgetUnknown(h Hash) {
	c.mu.Lock()
	c.gens[h[0]].Add(1)
	c.unknown.delete(h)
	c.mu.Unlock()
}

// clear forgets everything, and any fill in flight.
func (c *keyCache) clear() {
	c.mu.Lock()
	for i := range c.gens {
		c.gens[i].Add(1)
	}
	c.keys = newRandomMap[*Key]()
	c.unknown = newRandomMap[struct{}]()
	c.mu.Unlock()
}
