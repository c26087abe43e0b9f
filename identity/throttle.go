package identity

import (
	"sync"
	"time"
)

// LockoutPolicy says when repeated password failures lock a username or a
// client address out. The defaults follow Keycloak's and OWASP's advice:
// count per account, lock for a while that grows with repeated lockouts,
// and never for long enough to turn lockout into a denial of service.
type LockoutPolicy struct {
	// Failures of one username within Window that lock it. Default 10.
	AccountThreshold int
	// Failures from one client address within Window that lock it.
	// Higher, since many users may share an address. Default 50.
	AddressThreshold int
	// How long failures are remembered. Default 15 minutes.
	Window time.Duration
	// First lockout; each further lockout within Window doubles it.
	// Default 1 minute.
	Lockout time.Duration
	// Longest lockout. Default 15 minutes.
	MaxLockout time.Duration
	// Most usernames and addresses tracked at once; when full, the
	// oldest idle entries are forgotten. Default 100000.
	MaxEntries int
}

func (p LockoutPolicy) withDefaults() LockoutPolicy {
	if p.AccountThreshold <= 0 {
		p.AccountThreshold = 10
	}
	if p.AddressThreshold <= 0 {
		p.AddressThreshold = 50
	}
	if p.Window <= 0 {
		p.Window = 15 * time.Minute
	}
	if p.Lockout <= 0 {
		p.Lockout = time.Minute
	}
	if p.MaxLockout <= 0 {
		p.MaxLockout = 15 * time.Minute
	}
	if p.MaxEntries <= 0 {
		p.MaxEntries = 100_000
	}
	return p
}

// Throttle counts password failures per username and per client address.
// It treats unknown usernames exactly like known ones, so a lockout says
// nothing about whether an account exists.
type Throttle struct {
	policy LockoutPolicy
	now    func() time.Time

	mu        sync.Mutex
	accounts  map[string]*failures
	addresses map[string]*failures
}

type failures struct {
	count       int
	windowStart time.Time
	lockouts    int // lockouts within the current window, for escalation
	lockedUntil time.Time
	lastSeen    time.Time
}

// NewThrottle returns a Throttle with the policy's defaults filled in.
// now may be nil (time.Now).
func NewThrottle(p LockoutPolicy, now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{policy: p.withDefaults(), now: now,
		accounts: make(map[string]*failures), addresses: make(map[string]*failures)}
}

// Locked reports how long the caller must wait when the username or the
// address is locked out, and zero otherwise.
func (t *Throttle) Locked(username, addr string) time.Duration {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	for _, f := range []*failures{t.accounts[username], t.addresses[addr]} {
		if f != nil && f.lockedUntil.After(now) {
			wait = max(wait, f.lockedUntil.Sub(now))
		}
	}
	return wait
}

// Failed records a failure and returns the lockout it caused, if any.
func (t *Throttle) Failed(username, addr string) time.Duration {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.record(t.accounts, username, t.policy.AccountThreshold, now)
	b := t.record(t.addresses, addr, t.policy.AddressThreshold, now)
	return max(a, b)
}

// Succeeded forgets the username's failures (not the address's: a
// success on one account must not unlock guessing at others).
func (t *Throttle) Succeeded(username string) {
	t.mu.Lock()
	delete(t.accounts, username)
	t.mu.Unlock()
}

func (t *Throttle) record(m map[string]*failures, key string, threshold int, now time.Time) time.Duration {
	f := m[key]
	if f == nil {
		if len(m) >= t.policy.MaxEntries {
			t.prune(m, now)
		}
		f = &failures{windowStart: now}
		m[key] = f
	}
	if now.Sub(f.windowStart) > t.policy.Window && !f.lockedUntil.After(now) {
		*f = failures{windowStart: now}
	}
	f.lastSeen = now
	f.count++
	if f.count < threshold {
		return 0
	}
	lock := t.policy.Lockout << min(f.lockouts, 16)
	lock = min(lock, t.policy.MaxLockout)
	f.lockouts++
	f.count = 0
	f.windowStart = now
	f.lockedUntil = now.Add(lock)
	return lock
}

// prune drops entries idle for a window, or else the oldest tenth.
func (t *Throttle) prune(m map[string]*failures, now time.Time) {
	for k, f := range m {
		if now.Sub(f.lastSeen) > t.policy.Window && !f.lockedUntil.After(now) {
			delete(m, k)
		}
	}
	if len(m) < t.policy.MaxEntries {
		return
	}
	drop := max(len(m)/10, 1)
	for k, f := range m {
		if f.lockedUntil.After(now) {
			continue
		}
		delete(m, k)
		if drop--; drop == 0 {
			return
		}
	}
}
