package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Errors returned by Verifier.Authenticate. Their messages are safe to
// show to callers; other errors are faults of the user store.
var (
	// ErrBadCredentials means the password or token was not accepted.
	ErrBadCredentials = errors.New("invalid username or password")
	// ErrAPIKeyRefused means an API key was presented where it is not allowed.
	ErrAPIKeyRefused = errors.New("API keys cannot be used for this endpoint")
	// ErrOAuth2Disabled means a token arrived but no JWT keys are configured.
	ErrOAuth2Disabled = errors.New("OAuth2 tokens are not accepted: no JWT verification keys are configured")
	// ErrBusy means too many password checks are waiting already.
	ErrBusy = errors.New("the server is busy checking passwords; try again shortly")
)

// LockedOutError refuses a password attempt during a lockout.
type LockedOutError struct {
	// RetryAfter is how long until attempts are accepted again.
	RetryAfter time.Duration
}

func (e *LockedOutError) Error() string {
	return fmt.Sprintf("too many failed sign-in attempts; try again in %d seconds", retrySeconds(e.RetryAfter))
}

// RetryAfterSeconds is the lockout rounded up to whole seconds.
func (e *LockedOutError) RetryAfterSeconds() int { return retrySeconds(e.RetryAfter) }

func retrySeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// UserLookup returns the password hash of a user kept outside the
// configuration (in the key store), and false if there is none.
type UserLookup func(ctx context.Context, name string) (hash string, found bool, err error)

// VerifierOptions configure a Verifier beyond its users.
type VerifierOptions struct {
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
	// SuccessCacheSize bounds the remembered successful comparisons (as
	// Caddy's basic_auth does), which spare repeat sign-ins the hashing
	// cost. Default 1000; negative disables the cache.
	SuccessCacheSize int
}

// Verifier authenticates the owner of a management request.
type Verifier struct {
	users  map[string]string // configured users: name -> hash
	lookup UserLookup
	jwt    JWTIssuers
	opts   VerifierOptions
	slots  chan struct{}
	cache  *successCache

	fakeOnce sync.Once
	fakeHash string
	fakeLike string // a real hash whose algorithm and cost the fake copies
}

// NewVerifier returns a Verifier over configured users (name -> bcrypt or
// argon2id hash, already normalised), users found by lookup (may be nil),
// and the trusted token issuers (none when OAuth2 is not configured).
func NewVerifier(users map[string]string, lookup UserLookup, jwt JWTIssuers, opts VerifierOptions) *Verifier {
	if opts.MaxConcurrentHashes <= 0 {
		opts.MaxConcurrentHashes = runtime.NumCPU()
	}
	if opts.HashWait <= 0 {
		opts.HashWait = 5 * time.Second
	}
	if opts.SuccessCacheSize == 0 {
		opts.SuccessCacheSize = 1000
	}
	v := &Verifier{users: users, lookup: lookup, jwt: jwt, opts: opts,
		slots: make(chan struct{}, opts.MaxConcurrentHashes)}
	if opts.SuccessCacheSize > 0 {
		v.cache = &successCache{max: opts.SuccessCacheSize, m: make(map[[32]byte]struct{})}
	}
	for _, h := range users {
		v.fakeLike = h
		break
	}
	return v
}

// Identity is who a credential proves the caller to be.
type Identity struct {
	// Owner is the password user, or the token's identity within its
	// issuer's namespace.
	Owner keystore.Owner
	// FromToken says the credential was an OAuth2 token; its Scopes,
	// narrowed to what the issuer may pass on, bound the scopes of the
	// keys it mints.
	FromToken bool
	Scopes    []string
	// MaxKeyLifetime caps the keys minted with the credential; 0: no cap
	// beyond the key policy's.
	MaxKeyLifetime time.Duration
}

// Actor is the identity acting on its own keys.
func (id Identity) Actor() keystore.Actor {
	return keystore.Actor{Owner: id.Owner, FromToken: id.FromToken, TokenScopes: id.Scopes, MaxLifetime: id.MaxKeyLifetime}
}

// Authenticate returns who cred proves the caller to be; addr is the
// client's address, for lockouts. API keys are refused before anything is
// looked up.
func (v *Verifier) Authenticate(ctx context.Context, cred Credential, addr string) (Identity, error) {
	switch cred.Kind {
	case KindAPIKey:
		return Identity{}, ErrAPIKeyRefused
	case KindOAuth2:
		if len(v.jwt) == 0 {
			return Identity{}, ErrOAuth2Disabled
		}
		tok, err := v.jwt.Verify(ctx, cred.Token)
		if err != nil {
			return Identity{}, err
		}
		return Identity{Owner: tok.Owner, FromToken: true, Scopes: tok.Scopes, MaxKeyLifetime: tok.MaxKeyLifetime}, nil
	case KindPassword:
		name, err := v.checkPassword(ctx, cred.Username, cred.Password, addr)
		if err != nil {
			return Identity{}, err
		}
		return Identity{Owner: keystore.PasswordUser(name)}, nil
	}
	return Identity{}, ErrBadCredentials
}

func (v *Verifier) checkPassword(ctx context.Context, name, password, addr string) (string, error) {
	if t := v.opts.Throttle; t != nil {
		if wait := t.Locked(name, addr); wait > 0 {
			return "", &LockedOutError{RetryAfter: wait}
		}
	}
	hash, found := v.users[name]
	if !found && v.lookup != nil {
		var err error
		if hash, found, err = v.lookup(ctx, name); err != nil {
			return "", err
		}
	}
	ok, err := v.compare(ctx, name, hash, password, found)
	if errors.Is(err, ErrBusy) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "", err
	}
	if err != nil || !ok || !found {
		if t := v.opts.Throttle; t != nil {
			t.Failed(name, addr)
		}
		return "", ErrBadCredentials
	}
	if t := v.opts.Throttle; t != nil {
		t.Succeeded(name)
	}
	return name, nil
}

// compare checks password against hash (against a fake hash of the same
// cost when the user does not exist) within the concurrency bound.
func (v *Verifier) compare(ctx context.Context, name, hash, password string, found bool) (bool, error) {
	var key [32]byte
	if found && v.cache != nil {
		key = cacheKey(name, hash, password)
		if v.cache.has(key) {
			return true, nil
		}
	}
	timer := time.NewTimer(v.opts.HashWait)
	defer timer.Stop()
	select {
	case v.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-timer.C:
		return false, ErrBusy
	}
	defer func() { <-v.slots }()
	if !found {
		_, _ = ComparePassword(v.fake(), password)
		return false, nil
	}
	ok, err := ComparePassword(hash, password)
	if ok && err == nil && v.cache != nil {
		v.cache.add(key)
	}
	return ok, err
}

// fake returns the hash compared against for unknown users: of the same
// algorithm and cost as the configured users, or, without any, as the
// argon2id hashes that HashPassword makes for stored users.
func (v *Verifier) fake() string {
	v.fakeOnce.Do(func() {
		like := v.fakeLike
		if like == "" {
			like, _ = HashPassword("antitiming")
		}
		v.fakeHash = FakeHashLike(like)
	})
	return v.fakeHash
}

func cacheKey(name, hash, password string) [32]byte {
	h := sha256.New()
	for _, s := range []string{name, hash, password} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
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
