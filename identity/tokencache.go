package identity

import (
	"math/rand/v2"
	"sync"
)

// tokenCache remembers verified tokens by digest, so that a client
// minting many keys with one token pays for one verification (parsing,
// signature, claims), as Caddy's basic_auth remembers password checks.
// An entry is used only while a verification now would give the same
// answer: before the token's exp (with the leeway) and while its issuer's
// keys are unchanged. Failures are not cached. When full it drops a random
// tenth, as Caddy's basic_auth cache does.
type tokenCache struct {
	mu  sync.RWMutex
	max int
	m   map[[32]byte]TokenIdentity
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{max: size, m: make(map[[32]byte]TokenIdentity)}
}

func (c *tokenCache) get(key [32]byte) (TokenIdentity, bool) {
	c.mu.RLock()
	id, ok := c.m[key]
	c.mu.RUnlock()
	if ok && !id.stillValid() {
		c.mu.Lock()
		delete(c.m, key)
		c.mu.Unlock()
		return TokenIdentity{}, false
	}
	return id, ok
}

func (c *tokenCache) put(key [32]byte, id TokenIdentity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Go's map order is not random enough to evict by: pick each
		// victim by a random position, as Caddy does (the map is small).
		for range max(c.max/10, 1) {
			skip := rand.IntN(len(c.m))
			for k := range c.m {
				if skip == 0 {
					delete(c.m, k)
					break
				}
				skip--
			}
		}
	}
	c.m[key] = id
}
