package identity

import (
	"net/netip"
	"sync"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
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
// nothing about whether an account exists. Several gateways sharing users
// each enforce a part of the thresholds (SetShare).
type Throttle struct {
	policy LockoutPolicy
	now    func() time.Time

	mu        sync.Mutex
	accounts  map[string]*failures
	addresses map[string]*failures
	// This gateway's parts of AccountThreshold and AddressThreshold:
	// the whole of each unless SetShare said otherwise.
	accountLimit, addressLimit int
}

type failures struct {
	count       int
	windowStart time.Time
	lockouts    int // lockouts within the current window, for escalation
	lockedUntil time.Time
	lastSeen    time.Time
	// gen changes whenever count starts over (a lockout, a new window),
	// so that a late refund cannot take back a failure of another count.
	gen uint64
}

// NewThrottle returns a Throttle with the policy's defaults filled in.
// now may be nil (time.Now).
func NewThrottle(p LockoutPolicy, now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	p = p.withDefaults()
	return &Throttle{policy: p, now: now, accountLimit: p.AccountThreshold, addressLimit: p.AddressThreshold,
		accounts: make(map[string]*failures), addresses: make(map[string]*failures)}
}

// SetShare makes the throttle enforce the index-th of count parts of each
// threshold (keystore.PartOf), for count gateways that share users behind
// one load balancer: the parts add up to the thresholds, so the gateways
// together check at most AccountThreshold wrong passwords of a username
// (and AddressThreshold from an address) before each has locked it out.
// Counts are kept: one that already reaches a smaller new part locks at
// its next attempt, which is refused unchecked. A part of 0 (more
// gateways than the threshold) therefore locks at every first attempt
// and checks nothing. An impossible share (count < 1, an index outside
// it) is the whole thresholds, as before any call.
func (t *Throttle) SetShare(index, count int) {
	acct := int(keystore.PartOf(int64(t.policy.AccountThreshold), index, count))
	addr := int(keystore.PartOf(int64(t.policy.AddressThreshold), index, count))
	t.mu.Lock()
	t.accountLimit, t.addressLimit = acct, addr
	t.mu.Unlock()
}

// Limits returns this gateway's parts of the account and address
// thresholds.
func (t *Throttle) Limits() (account, address int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.accountLimit, t.addressLimit
}

// Locked reports how long the caller must wait when the username or the
// address is locked out, and zero otherwise.
func (t *Throttle) Locked(username, addr string) time.Duration {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	for _, f := range []*failures{t.accounts[username], t.addresses[AddressKey(addr)]} {
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
	a := t.record(t.accounts, username, t.accountLimit, now)
	b := t.record(t.addresses, AddressKey(addr), t.addressLimit, now)
	return max(a, b)
}

// Succeeded forgets the username's failures (not the address's: a
// success on one account must not unlock guessing at others).
func (t *Throttle) Succeeded(username string) {
	t.mu.Lock()
	delete(t.accounts, username)
	t.mu.Unlock()
}

// record counts a failure of key in m, and starts its lockout when the
// count reaches limit.
func (t *Throttle) record(m map[string]*failures, key string, limit int, now time.Time) time.Duration {
	f := t.entry(m, key, now)
	f.lastSeen = now
	f.count++
	if f.count < limit {
		return 0
	}
	return t.lock(f, now)
}

// lock starts a lockout of f, each one in a window twice as long as the
// one before, and starts its count over.
func (t *Throttle) lock(f *failures, now time.Time) time.Duration {
	lock := t.policy.Lockout << min(f.lockouts, 16)
	lock = min(lock, t.policy.MaxLockout)
	f.lockouts++
	f.count = 0
	f.gen++
	f.windowStart = now
	f.lockedUntil = now.Add(lock)
	return lock
}

// entry returns key's failures in m, created or started over as needed.
func (t *Throttle) entry(m map[string]*failures, key string, now time.Time) *failures {
	f := m[key]
	if f == nil {
		if len(m) >= t.policy.MaxEntries {
			t.prune(m, now)
		}
		f = &failures{windowStart: now}
		m[key] = f
	}
	if now.Sub(f.windowStart) > t.policy.Window && !f.lockedUntil.After(now) {
		*f = failures{windowStart: now, gen: f.gen + 1}
	}
	return f
}

// AddressKey is the key under which failures from a client address are
// counted: the address itself, or for IPv6 its /64, since one subscriber
// usually holds a whole /64 and could otherwise rotate through it.
// Strings that are not IP addresses are used as they are.
func AddressKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
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

// Reservation is a failure counted in advance for one password attempt.
// Counting before the password is checked, under the throttle's lock, is
// what bounds the number of passwords checked however many attempts
// arrive at once: an attempt that finds the threshold reached is refused
// before it is hashed. A nil Reservation (no throttle) does nothing.
type Reservation struct {
	t                      *Throttle
	account, address       string
	accountGen, addressGen uint64
	// Whether this attempt's failure started the lockout, and the counts
	// before it, which a refund of such a failure restores.
	lockedAccount, lockedAddress bool
	accountBefore, addressBefore int
	done                         bool
}

// Reserve counts a failure of username from addr before its password is
// checked. When either is locked out it counts nothing and returns how
// long the caller must wait. Otherwise the attempt may proceed; the
// failure stands unless the caller then calls Succeeded or Cancel. The
// attempt that reaches this gateway's part of a threshold is still
// checked, and starts the lockout that refuses the ones after it.
func (t *Throttle) Reserve(username, addr string) (*Reservation, time.Duration) {
	addr = AddressKey(addr)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	acct := t.entry(t.accounts, username, now)
	host := t.entry(t.addresses, addr, now)
	// A count that already reaches its part (made smaller since by
	// SetShare, or 0) starts its lockout now, without a check.
	if acct.count >= t.accountLimit && !acct.lockedUntil.After(now) {
		t.lock(acct, now)
	}
	if host.count >= t.addressLimit && !host.lockedUntil.After(now) {
		t.lock(host, now)
	}
	var wait time.Duration
	for _, f := range []*failures{acct, host} {
		if f.lockedUntil.After(now) {
			wait = max(wait, f.lockedUntil.Sub(now))
		}
	}
	if wait > 0 {
		return nil, wait
	}
	r := &Reservation{t: t, account: username, address: addr, accountBefore: acct.count, addressBefore: host.count}
	r.lockedAccount = t.record(t.accounts, username, t.accountLimit, now) > 0
	r.lockedAddress = t.record(t.addresses, addr, t.addressLimit, now) > 0
	r.accountGen, r.addressGen = acct.gen, host.gen
	return r, 0
}

// Succeeded ends a reservation whose password was right: the username's
// failures are forgotten, as by Throttle.Succeeded, and the address's
// count is refunded (its other failures stand: a success on one account
// must not unlock guessing at others).
func (r *Reservation) Succeeded() {
	if r == nil || r.done {
		return
	}
	r.done = true
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.accounts, r.account)
	t.refund(t.addresses, r.address, r.addressGen, r.lockedAddress, r.addressBefore)
}

// Cancel ends a reservation whose password was never checked (no hashing
// slot, a store fault, a client gone): both counts are refunded.
func (r *Reservation) Cancel() {
	if r == nil || r.done {
		return
	}
	r.done = true
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refund(t.accounts, r.account, r.accountGen, r.lockedAccount, r.accountBefore)
	t.refund(t.addresses, r.address, r.addressGen, r.lockedAddress, r.addressBefore)
}

// refund takes back one reserved failure of key, unless its count has
// started over since (the refund then has nothing left to take back). If
// that failure started a lockout still in force, the lockout is undone
// and the count is as before that failure: no attempt was refused by it
// that the count would not refuse anyway.
func (t *Throttle) refund(m map[string]*failures, key string, gen uint64, locked bool, before int) {
	f := m[key]
	if f == nil || f.gen != gen {
		return
	}
	if !locked {
		f.count = max(f.count-1, 0)
		return
	}
	if f.lockedUntil.After(t.now()) {
		f.lockedUntil = time.Time{}
		f.lockouts--
		f.count = before
		f.gen--
	}
}
