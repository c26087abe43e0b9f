package caddymodule

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
)

// Defaults of UnknownKeyBudget.
const (
	DefaultUnknownKeyRate  = 10
	DefaultUnknownKeyBurst = 100
)

// UnknownKeyBudget bounds, per client address, how many keys that the
// gateway does not know to exist may be looked up in the store. Key
// checksums are public, so anyone can make endless well-formed keys, and
// each one the gateway has not seen costs a store read (on etcd, a
// linearizable read through the leader). Beyond the budget such keys are
// refused with 401 without a store read. Keys known to exist (cached)
// never count, so clients whose keys are valid are not slowed; a client
// that shares an address with a flood may see its own keys refused until
// they are cached.
type UnknownKeyBudget struct {
	// Turns the budget off: every key not in the cache is read from the
	// store.
	Disabled bool `json:"disabled,omitempty"`
	// Store reads per second allowed to one client address (an IPv6
	// client: its /64) for keys not known to exist. Default 10.
	Rate float64 `json:"rate,omitempty"`
	// How many such reads one address may make at once before the rate
	// applies. Default 100.
	Burst int `json:"burst,omitempty"`
}

// unknownKeys is the token bucket of each client address.
type unknownKeys struct {
	rate  rate.Limit
	burst int
	max   int // most addresses tracked

	mu      sync.Mutex
	clients map[string]*rate.Limiter
}

// limiter returns the budget's buckets, or nil when it is off.
func (b *UnknownKeyBudget) limiter() *unknownKeys {
	if b != nil && b.Disabled {
		return nil
	}
	u := &unknownKeys{rate: DefaultUnknownKeyRate, burst: DefaultUnknownKeyBurst, max: 100_000,
		clients: make(map[string]*rate.Limiter)}
	if b != nil && b.Rate > 0 {
		u.rate = rate.Limit(b.Rate)
	}
	if b != nil && b.Burst > 0 {
		u.burst = b.Burst
	}
	return u
}

// allow takes one store read from addr's budget, if there is one left.
func (u *unknownKeys) allow(addr string) bool {
	if u == nil {
		return true
	}
	addr = identity.AddressKey(addr)
	now := time.Now()
	u.mu.Lock()
	l := u.clients[addr]
	if l == nil {
		if len(u.clients) >= u.max {
			u.prune(now)
		}
		l = rate.NewLimiter(u.rate, u.burst)
		u.clients[addr] = l
	}
	u.mu.Unlock()
	return l.AllowN(now, 1)
}

// prune forgets addresses whose bucket is full again (forgetting them
// changes nothing), or else an arbitrary tenth.
func (u *unknownKeys) prune(now time.Time) {
	for a, l := range u.clients {
		if l.TokensAt(now) >= float64(u.burst) {
			delete(u.clients, a)
		}
	}
	drop := len(u.clients) - u.max + max(u.max/10, 1)
	for a := range u.clients {
		if drop <= 0 {
			return
		}
		delete(u.clients, a)
		drop--
	}
}
