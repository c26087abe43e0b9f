package identity

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// UserLookup returns the password hash of a user kept outside the
// configuration (in the key store), and false if there is none.
type UserLookup func(ctx context.Context, name string) (hash string, found bool, err error)

// PasswordOptions configure the checks of Passwords.
type PasswordOptions struct {
	// Throttle, if set, locks out usernames and addresses after repeated
	// password failures.
	Throttle *Throttle
	// MaxConcurrentHashes bounds simultaneous password-hash comparisons, so
	// that a flood of sign-ins cannot starve other work. Default: the
	// number of CPUs.
	MaxConcurrentHashes int
	// HashWait is the longest a password check waits for a free slot
	// before failing with ErrBusy. Default 5s.
	HashWait time.Duration
	// MaxQueuedHashes bounds the password checks waiting for a slot;
	// beyond it a check fails with ErrBusy at once instead of holding its
	// request. Default: 8 per slot.
	MaxQueuedHashes int
	// StoredHashes, if set, returns the password hashes of the users kept
	// outside the configuration. It is read once, before the first
	// password check, so that the cost of every kind of hash in use is
	// known; kinds added to the store later are learnt when met.
	StoredHashes func(context.Context) ([]string, error)
	// SuccessCacheSize bounds the remembered successful password
	// comparisons (as Caddy's basic_auth does), which spare repeat
	// sign-ins their cost. Default 1000; negative disables the cache.
	SuccessCacheSize int
}

// Passwords is the source of password users: those declared in the
// configuration and those its lookup finds (in the key store). It checks
// a password within a bounded number of hash comparisons at once, as long
// as a comparison of the most expensive kind of hash in use whatever the
// user (so that timing tells nothing), and under the lockout.
type Passwords struct {
	users  map[string]string // configured users: name -> hash
	lookup UserLookup
	opts   PasswordOptions
	slots  chan struct{}
	queued atomic.Int64 // checks waiting for a slot
	cache  *successCache

	// Password checks in flight, by client address, name and password
	// (see checkPassword).
	signIns singleflight.Group

	costs    hashCosts
	fakeOnce sync.Once
	fakeLike []string // the configured users' hashes, whose kinds are measured
}

// NewPasswords returns the source of configured users (name -> bcrypt or
// argon2id hash, already normalised) and of users found by lookup (may be
// nil).
func NewPasswords(users map[string]string, lookup UserLookup, opts PasswordOptions) *Passwords {
	if opts.MaxConcurrentHashes <= 0 {
		opts.MaxConcurrentHashes = runtime.NumCPU()
	}
	if opts.HashWait <= 0 {
		opts.HashWait = 5 * time.Second
	}
	if opts.MaxQueuedHashes <= 0 {
		opts.MaxQueuedHashes = 8 * opts.MaxConcurrentHashes
	}
	if opts.SuccessCacheSize == 0 {
		opts.SuccessCacheSize = 1000
	}
	v := &Passwords{users: users, lookup: lookup, opts: opts,
		slots: make(chan struct{}, opts.MaxConcurrentHashes)}
	if opts.SuccessCacheSize > 0 {
		v.cache = &successCache{max: opts.SuccessCacheSize, m: make(map[[32]byte]struct{})}
	}
	for _, h := range users {
		v.fakeLike = append(v.fakeLike, h)
	}
	return v
}

// Kind is KindPassword.
func (v *Passwords) Kind() Kind { return KindPassword }

// Authenticate checks a username and password.
func (v *Passwords) Authenticate(ctx context.Context, cred Credential, addr string) (Identity, error) {
	name, err := v.checkPassword(ctx, cred.Username, cred.Password, addr)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Owner: keystore.PasswordUser(name)}, nil
}

func (v *Passwords) checkPassword(ctx context.Context, name, password, addr string) (string, error) {
	// A configured user's password checked right recently is known from
	// the success cache without a hash comparison: it is no guess, so it
	// neither counts against nor waits for the lockout (concurrent
	// sign-ins of one client, or guesses by others, do not lock it out).
	if hash, ok := v.users[name]; ok && v.cache != nil && v.cache.has(digestOf(name, hash, password)) {
		return name, nil
	}
	// Sign-ins of one name with one password from one client at once are
	// one attempt: the first is counted and checked, the others wait for
	// its outcome. Each counted as a failure until checked, a client's
	// burst of right sign-ins would lock its own user out; a burst of one
	// wrong guess is one guess. The check goes on if its first caller goes
	// away, for the others; a caller that goes away stops waiting.
	key := digestOf(AddressKey(addr), name, password)
	ch := v.signIns.DoChan(string(key[:]), func() (_ any, err error) {
		// A panic here would be raised again where no server recovers
		// it, ending the process: it fails the sign-ins instead.
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("password check failed: %v", p)
			}
		}()
		return v.checkPasswordOnce(context.WithoutCancel(ctx), name, password, addr)
	})
	select {
	case r := <-ch:
		checked, _ := r.Val.(string)
		return checked, r.Err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// checkPasswordOnce checks one sign-in against the lockout and the
// user's hash.
func (v *Passwords) checkPasswordOnce(ctx context.Context, name, password, addr string) (string, error) {
	// The failure is counted before anything is looked up or hashed, and
	// taken back only if the password is right or was never checked.
	res, wait := v.opts.Throttle.reserve(name, addr)
	if wait > 0 {
		return "", &LockedOutError{RetryAfter: wait}
	}
	hash, found := v.users[name]
	if !found && v.lookup != nil {
		var err error
		if hash, found, err = v.lookup(ctx, name); err != nil {
			res.Cancel()
			return "", err
		}
	}
	ok, err := v.compare(ctx, name, hash, password, found)
	if errors.Is(err, ErrBusy) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		res.Cancel()
		return "", err
	}
	if err != nil || !ok || !found {
		return "", ErrBadCredentials
	}
	res.Succeeded()
	return name, nil
}

// reserve is Throttle.Reserve for a throttle that may be nil (no lockout).
func (t *Throttle) reserve(name, addr string) (*Reservation, time.Duration) {
	if t == nil {
		return nil, 0
	}
	return t.Reserve(name, addr)
}

// compare checks password against hash (against a fake hash when the user
// does not exist) within the concurrency bound, and takes as long as a
// check of the most expensive kind of hash in use, whatever the user.
func (v *Passwords) compare(ctx context.Context, name, hash, password string, found bool) (bool, error) {
	var key [32]byte
	if found && v.cache != nil {
		key = digestOf(name, hash, password)
		if v.cache.has(key) {
			return true, nil
		}
	}
	if err := v.acquire(ctx); err != nil {
		return false, err
	}
	v.learnCosts(ctx)
	if found {
		// A kind not seen before (a stored user's) is measured now, so
		// that this very check is padded to the right cost.
		v.costs.add(hash)
	}
	against := hash
	if !found {
		against = v.fake()
	}
	start := time.Now()
	ok, err := ComparePassword(against, password)
	v.costs.observe(against, time.Since(start))
	<-v.slots
	// Padding sleeps without a slot: it costs time, not CPU.
	v.costs.pad(ctx, start)
	if !found {
		return false, nil
	}
	if ok && err == nil && v.cache != nil {
		v.cache.add(key)
	}
	return ok, err
}

// acquire takes a hashing slot, waiting at most HashWait, and behind at
// most MaxQueuedHashes other checks.
func (v *Passwords) acquire(ctx context.Context) error {
	select {
	case v.slots <- struct{}{}:
		return nil
	default:
	}
	if v.queued.Add(1) > int64(v.opts.MaxQueuedHashes) {
		v.queued.Add(-1)
		return ErrBusy
	}
	defer v.queued.Add(-1)
	timer := time.NewTimer(v.opts.HashWait)
	defer timer.Stop()
	select {
	case v.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return ErrBusy
	}
}

// learnCosts measures, once, every kind of hash known before the first
// check: the configured users', the stored users', and HashPassword's.
func (v *Passwords) learnCosts(ctx context.Context) {
	v.fakeOnce.Do(func() {
		hashes := v.fakeLike
		if h, err := HashPassword("antitiming"); err == nil {
			hashes = append(hashes, h)
		}
		if v.opts.StoredHashes != nil {
			// Without them, stored kinds are learnt as they are met.
			if stored, err := v.opts.StoredHashes(ctx); err == nil {
				hashes = append(hashes, stored...)
			}
		}
		for _, h := range hashes {
			v.costs.add(h)
		}
	})
}

// fake returns the hash compared against for unknown users: one of the
// most expensive kind of hash in use.
func (v *Passwords) fake() string {
	v.learnCosts(context.Background())
	return v.costs.fake()
}

// digestOf is the SHA-256 of parts, each preceded by its length, so that
// no two lists of parts share it. Known passwords (by user, hash and
// password) and sign-ins in flight (by address, user and password) are
// keyed by such digests, so that passwords are not kept as map keys.
func digestOf(parts ...string) [32]byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, s := range parts {
		h.Write(binary.AppendUvarint(n[:0], uint64(len(s))))
		h.Write([]byte(s))
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// successCache remembers digests of (user, hash, password) triples that
// matched. A changed password changes the hash, so old entries stop
// matching by themselves.
type successCache struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]struct{}
}

func (c *successCache) has(k [32]byte) bool {
	c.mu.Lock()
	_, ok := c.m[k]
	c.mu.Unlock()
	return ok
}

func (c *successCache) add(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		drop := max(c.max/10, 1)
		for old := range c.m {
			delete(c.m, old)
			if drop--; drop == 0 {
				break
			}
		}
	}
	c.m[k] = struct{}{}
}
