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

// UnknownKeyBudget bounds, per client address, how many keys that turn
// out not to exist may be looked up in the store. Key checksums are
// public, so anyone can make endless well-formed keys, and each one the
// gateway has not seen costs a store read (on etcd, a linearizable read
// through the leader). Once an address has spent its budget, keys the
// gateway does not know to exist are refused with 401 without a store
// read. Keys that exist never spend it (a lookup holds a token while in
// flight and gives it back), so clients using valid keys, even many new
// ones, are not refused; a client that shares an address with a flood may
// see its keys not yet cached refused until the budget refills.
type UnknownKeyBudget struct {
	// Turns the budget off: every key not in the cache is read from the
	// store.
	Disabled bool `json:"disabled,omitempty"`
	// Lookups of keys that turn out not to exist allowed per second to one
	// client address (an IPv6 client: its /64). Default 10.
	Rate float64 `json:"rate,omitempty"`
	// How many such lookups one address may make before the rate applies
	// (and at most at once). Default 100.
	Burst int `json:"burst,omitempty"`
}

// unknownKeys is the token bucket of each client address. A lookup takes
// a token while it is in flight and gives it back if the key exists, so
// that however many lookups run at once, no more keys that turn out
// unknown are read than the bucket holds, and valid keys cost nothing.
// A lookup that finds every token left held by lookups in flight waits
// for them to settle (up to unknownLookupWait): a burst of new valid keys
// from one address is then not refused for arriving at once.
type unknownKeys struct {
	rate  rate.Limit
	burst int
	max   int // most addresses tracked

	mu      sync.Mutex
	clients map[string]*budget
}

// unknownLookupWait bounds how long a lookup waits for the lookups in
// flight from its address to settle.
const unknownLookupWait = time.Second

type budget struct {
	tokens   *rate.Limiter
	inflight int           // lookups holding a token
	settled  chan struct{} // closed when one settles; nil when none waits
}

// limiter returns the budget's buckets, or nil when it is off.
func (b *UnknownKeyBudget) limiter() *unknownKeys {
	if b != nil && b.Disabled {
		return nil
	}
	u := &unknownKeys{rate: DefaultUnknownKeyRate, burst: DefaultUnknownKeyBurst, max: 100_000,
		clients: make(map[string]*budget)}
	if b != nil && b.Rate > 0 {
		u.rate = rate.Limit(b.Rate)
	}
	if b != nil && b.Burst > 0 {
		u.burst = b.Burst
	}
	return u
}

// allow holds one token of addr's budget for a lookup, if one is left,
// and returns the function that settles it: spent if the key did not
// exist, given back if it did.
func (u *unknownKeys) allow(addr string) (settle func(exists bool), ok bool) {
	if u == nil {
		return func(bool) {}, true
	}
	addr = identity.AddressKey(addr)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b, wait := u.take(addr)
		if b != nil {
			return u.settler(b), true
		}
		if wait == nil {
			return nil, false
		}
		if timer == nil {
			timer = time.NewTimer(unknownLookupWait)
		}
		select {
		case <-wait:
		case <-timer.C:
			return nil, false
		}
	}
}

// take holds a token of addr's budget and returns the budget, or, when
// the tokens left are all held by lookups in flight, a channel closed
// when one of them settles; neither when the budget is spent.
func (u *unknownKeys) take(addr string) (*budget, <-chan struct{}) {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	b := u.clients[addr]
	if b == nil {
		if len(u.clients) >= u.max {
			u.prune(now)
		}
		b = &budget{tokens: rate.NewLimiter(u.rate, u.burst)}
		u.clients[addr] = b
	}
	left := b.tokens.TokensAt(now)
	switch {
	case left-float64(b.inflight) >= 1:
		b.inflight++
		return b, nil
	case left < 1:
		return nil, nil
	}
	if b.settled == nil {
		b.settled = make(chan struct{})
	}
	return nil, b.settled
}

func (u *unknownKeys) settler(b *budget) func(exists bool) {
	return func(exists bool) {
		u.mu.Lock()
		defer u.mu.Unlock()
		b.inflight--
		if !exists {
			b.tokens.AllowN(time.Now(), 1)
		}
		if b.settled != nil {
			close(b.settled)
			b.settled = nil
		}
	}
}

// prune forgets idle addresses whose bucket is full again (forgetting
// them changes nothing), or else an arbitrary tenth of the idle ones.
func (u *unknownKeys) prune(now time.Time) {
	for a, b := range u.clients {
		if b.inflight == 0 && b.tokens.TokensAt(now) >= float64(u.burst) {
			delete(u.clients, a)
		}
	}
	drop := len(u.clients) - u.max + max(u.max/10, 1)
	for a, b := range u.clients {
		if drop <= 0 {
			return
		}
		if b.inflight == 0 {
			delete(u.clients, a)
			drop--
		}
	}
}
