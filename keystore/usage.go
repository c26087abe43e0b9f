package keystore

import (
	"sync"
	"time"
)

// usageLog coalesces last-used times in memory so that validating a key
// never writes to disk; Keyring flushes it periodically in one write.
type usageLog struct {
	mu      sync.Mutex
	pending map[string]time.Time
}

func (u *usageLog) record(id string, t time.Time) {
	u.mu.Lock()
	u.pending[id] = t
	u.mu.Unlock()
}

func (u *usageLog) pendingFor(id string) (time.Time, bool) {
	u.mu.Lock()
	t, ok := u.pending[id]
	u.mu.Unlock()
	return t, ok
}

// take returns the pending times, or nil if there are none, and starts
// a fresh set. The caller owns the returned map.
func (u *usageLog) take() map[string]time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.pending
	if len(p) == 0 {
		return nil
	}
	u.pending = make(map[string]time.Time, len(p))
	return p
}

// restore puts back times whose write failed, unless newer ones arrived.
func (u *usageLog) restore(p map[string]time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id, t := range p {
		if cur, ok := u.pending[id]; !ok || t.After(cur) {
			u.pending[id] = t
		}
	}
}
