package keystore

import "sync"

// keyCache is a bounded map from key digest to record. When full, it drops
// an arbitrary tenth of its entries, as Caddy's basic_auth hash cache does:
// no bookkeeping on the read path, and the store answers any miss.
type keyCache struct {
	mu   sync.RWMutex
	max  int
	keys map[Hash]*Key
}

func newKeyCache(max int) *keyCache {
	return &keyCache{max: max, keys: make(map[Hash]*Key)}
}

func (c *keyCache) get(h Hash) (*Key, bool) {
	c.mu.RLock()
	k, ok := c.keys[h]
	c.mu.RUnlock()
	return k, ok
}

func (c *keyCache) put(h Hash, k *Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= c.max {
		drop := max(c.max/10, 1)
		for old := range c.keys {
			delete(c.keys, old)
			if drop--; drop == 0 {
				break
			}
		}
	}
	c.keys[h] = k
}

func (c *keyCache) remove(h Hash) {
	c.mu.Lock()
	delete(c.keys, h)
	c.mu.Unlock()
}
