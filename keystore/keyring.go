package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Keyring.Verify for keys that exist but are refused.
var (
	ErrExpired  = errors.New("API key has expired")
	ErrDisabled = errors.New("API key is disabled")
)

// Defaults for Options fields left zero.
const (
	DefaultCacheSize     = 100_000
	DefaultFlushInterval = 5 * time.Second
)

// Options tune a Keyring.
type Options struct {
	// Prefix of minted keys. Default DefaultPrefix.
	Prefix string
	// CacheSize bounds the number of verified keys kept in memory.
	// Default DefaultCacheSize.
	CacheSize int
	// FlushInterval is how often recorded last-used times are written.
	// Default DefaultFlushInterval.
	FlushInterval time.Duration
	// OnFlushError, if set, is told when writing last-used times fails.
	OnFlushError func(error)
	// MaxStale applies to Watchable stores only: how long after the watch
	// last caught up cached lookups are still trusted. Past it, every
	// verification reads the store, and fails closed if it cannot.
	// Default DefaultMaxStale.
	MaxStale time.Duration
	// Now returns the current time; tests may replace it. Default time.Now.
	Now func() time.Time
}

// Keyring is the key service in front of a Store: it mints keys, verifies
// presented keys through a bounded in-memory cache, and records last-used
// times in memory, writing them in one transaction every FlushInterval.
// A Keyring does not own its Store; Close flushes but does not close it.
type Keyring struct {
	store  Store
	prefix string
	now    func() time.Time
	cache  *keyCache
	usage  usageLog

	// For Watchable stores: the watch's cancel and end, and when it last
	// caught up (Unix nanoseconds).
	watched     bool
	maxStale    time.Duration
	started     time.Time
	caughtUp    atomic.Int64
	cacheResets atomic.Uint64
	stopWatch   context.CancelFunc
	watchDone   chan struct{}

	onFlushError func(error)
	stop         chan struct{}
	done         chan struct{}
	closeOnce    sync.Once

	reads sharedReads // store reads of cache misses, shared per digest
}

// NewKeyring starts a Keyring over store. Call Close to stop it.
func NewKeyring(store Store, opts Options) *Keyring {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxStale <= 0 {
		opts.MaxStale = DefaultMaxStale
	}
	kr := &Keyring{
		store:        store,
		prefix:       opts.Prefix,
		now:          opts.Now,
		cache:        newKeyCache(opts.CacheSize),
		usage:        usageLog{pending: make(map[string]time.Time)},
		maxStale:     opts.MaxStale,
		started:      opts.Now(),
		onFlushError: opts.OnFlushError,
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	go kr.flushLoop(opts.FlushInterval)
	if w, ok := store.(Watchable); ok {
		ctx, cancel := context.WithCancel(context.Background())
		kr.watched, kr.stopWatch, kr.watchDone = true, cancel, make(chan struct{})
		go func() {
			defer close(kr.watchDone)
			w.WatchKeys(ctx, keyringWatcher{kr})
		}()
	}
	return kr
}

// Prefix returns the prefix of keys this Keyring mints and accepts.
func (kr *Keyring) Prefix() string { return kr.prefix }

// Store returns the underlying store.
func (kr *Keyring) Store() Store { return kr.store }

// Minted is a newly created key: its record and the plaintext, which
// exists only here and must be shown to the owner exactly once.
type Minted struct {
	Key
	Secret string
}

// MintOptions are the optional properties of a new key.
type MintOptions struct {
	// Title labels the key.
	Title string
	// Expires is when the key stops working; zero means never.
	Expires time.Time
	// Scopes the key grants.
	Scopes []string
	// MaxPerOwner, if positive, refuses the key with ErrLimit when the
	// owner already has that many.
	MaxPerOwner int
}

// Mint creates, stores and returns a new key for owner. The key is durable
// when Mint returns.
func (kr *Keyring) Mint(ctx context.Context, owner string, opts MintOptions) (Minted, error) {
	m, err := kr.newKey(owner, opts)
	if err != nil {
		return Minted{}, err
	}
	if err := kr.store.CreateKey(ctx, m.Key, opts.MaxPerOwner); err != nil {
		return Minted{}, err
	}
	kr.cache.remove(m.Hash) // in case it was presented before it existed
	return m, nil
}

func (kr *Keyring) newKey(owner string, opts MintOptions) (Minted, error) {
	secret, err := NewKey(kr.prefix)
	if err != nil {
		return Minted{}, err
	}
	// Microsecond precision, the resolution the store keeps.
	created := kr.now().Truncate(time.Microsecond)
	id, err := NewID(created)
	if err != nil {
		return Minted{}, err
	}
	k := Key{
		ID:      id,
		Hash:    HashKey(secret),
		Owner:   owner,
		Title:   opts.Title,
		Preview: Preview(secret, kr.prefix),
		Created: created,
		Expires: opts.Expires.Truncate(time.Microsecond),
		Scopes:  opts.Scopes,
	}
	return Minted{Key: k, Secret: secret}, nil
}

// Rotate replaces the key id with a new one of the same owner, title,
// scopes and expiry. The old key keeps working for grace (not past its own
// expiry), or stops at once when grace is zero.
func (kr *Keyring) Rotate(ctx context.Context, id string, grace time.Duration) (next Minted, old Key, err error) {
	if old, err = kr.store.KeyByID(ctx, id); err != nil {
		return Minted{}, Key{}, err
	}
	next, err = kr.newKey(old.Owner, MintOptions{Title: old.Title, Expires: old.Expires, Scopes: old.Scopes})
	if err != nil {
		return Minted{}, Key{}, err
	}
	var retireAt time.Time
	if grace > 0 {
		retireAt = kr.now().Add(grace).Truncate(time.Microsecond)
		if !old.Expires.IsZero() && old.Expires.Before(retireAt) {
			retireAt = old.Expires
		}
	}
	if old, err = kr.store.RotateKey(ctx, id, next.Key, retireAt); err != nil {
		return Minted{}, Key{}, err
	}
	kr.cache.remove(old.Hash)
	kr.cache.remove(next.Hash)
	return next, old, nil
}

// SetDisabled disables or re-enables the key id; a disabled key is refused
// from the next Verify on.
func (kr *Keyring) SetDisabled(ctx context.Context, id string, disabled bool) (Key, error) {
	k, err := kr.store.UpdateKey(ctx, id, func(k *Key) error {
		k.Disabled = disabled
		return nil
	})
	if err != nil {
		return Key{}, err
	}
	kr.cache.remove(k.Hash)
	return k, nil
}

// KeyByID returns the key id with any pending last-used time applied.
func (kr *Keyring) KeyByID(ctx context.Context, id string) (Key, error) {
	k, err := kr.store.KeyByID(ctx, id)
	if err != nil {
		return Key{}, err
	}
	kr.applyPendingUse(&k)
	return k, nil
}

// Keys lists every key, oldest first, with pending last-used times.
func (kr *Keyring) Keys(ctx context.Context) ([]Key, error) {
	keys, err := kr.store.Keys(ctx)
	for i := range keys {
		kr.applyPendingUse(&keys[i])
	}
	return keys, err
}

// RemoveUser deletes a stored user and revokes all their keys.
func (kr *Keyring) RemoveUser(ctx context.Context, name string) ([]Key, error) {
	removed, err := kr.store.DeleteUser(ctx, name)
	for _, k := range removed {
		kr.cache.remove(k.Hash)
	}
	return removed, err
}

// Verify checks a presented key and returns its record, which the caller
// must not modify. It returns ErrMalformedKey without touching the store
// when the format or checksum is wrong, ErrNotFound for unknown keys,
// ErrExpired or ErrDisabled for refused ones, and any other error only for
// store faults. A successful Verify records the use in memory.
func (kr *Keyring) Verify(ctx context.Context, presented string) (*Key, error) {
	return kr.verify(ctx, presented, nil)
}

func (kr *Keyring) verify(ctx context.Context, presented string, budget ReadBudget) (*Key, error) {
	if err := ParseKey(presented, kr.prefix); err != nil {
		return nil, err
	}
	h := HashKey(presented)
	now := kr.now()
	k, ok := kr.cache.get(h)
	if !ok || !kr.cacheTrusted(now) {
		settle := func(bool) {}
		if k == nil && budget != nil {
			var allowed bool
			if settle, allowed = budget(); !allowed {
				return nil, ErrOverBudget
			}
		}
		var err error
		k, err = kr.lookup(ctx, h)
		settle(k != nil && err == nil)
		if err != nil {
			return nil, err
		}
	}
	if k == nil {
		return nil, ErrNotFound
	}
	if k.Disabled {
		return nil, ErrDisabled
	}
	if !k.Usable(now) {
		return nil, ErrExpired
	}
	kr.usage.record(k.ID, now)
	return k, nil
}

// lookup reads h from the store and caches the answer, found or not.
func (kr *Keyring) lookup(ctx context.Context, h Hash) (*Key, error) {
	gen := kr.cache.generation(h)
	stored, err := kr.readKeyShared(ctx, h, gen)
	if errors.Is(err, ErrNotFound) {
		kr.cache.put(h, nil, gen)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	stored.attributes = stored.buildAttributes()
	kr.cache.put(h, &stored, gen)
	return &stored, nil
}

// cacheTrusted reports whether cached lookups may answer at now: always
// for a store only this process writes, and for a Watchable store only
// while its watch caught up within MaxStale.
func (kr *Keyring) cacheTrusted(now time.Time) bool {
	return !kr.watched || now.UnixNano()-kr.caughtUp.Load() <= int64(kr.maxStale)
}

// KeysByOwner lists owner's keys, oldest first, with last-used times that
// are not yet flushed already applied.
func (kr *Keyring) KeysByOwner(ctx context.Context, owner string) ([]Key, error) {
	keys, err := kr.store.KeysByOwner(ctx, owner)
	if err != nil {
		return nil, err
	}
	for i := range keys {
		kr.applyPendingUse(&keys[i])
	}
	return keys, nil
}

func (kr *Keyring) applyPendingUse(k *Key) {
	if t, ok := kr.usage.pendingFor(k.ID); ok && t.After(k.LastUsed) {
		k.LastUsed = t
	}
}

// Delete removes the key with the given id; the next Verify of it fails.
func (kr *Keyring) Delete(ctx context.Context, id string) (Key, error) {
	k, err := kr.store.DeleteKey(ctx, id)
	if err != nil {
		return Key{}, err
	}
	kr.cache.remove(k.Hash)
	return k, nil
}

// Flush writes the recorded last-used times now.
func (kr *Keyring) Flush(ctx context.Context) error {
	pending := kr.usage.take()
	if len(pending) == 0 {
		return nil
	}
	if err := kr.store.TouchKeys(ctx, pending); err != nil {
		kr.usage.restore(pending) // keep them for the next try
		return err
	}
	return nil
}

// Close stops the background flusher and writes pending last-used times.
func (kr *Keyring) Close() error {
	var err error
	kr.closeOnce.Do(func() {
		if kr.watched {
			kr.stopWatch()
			<-kr.watchDone
		}
		close(kr.stop)
		<-kr.done
		err = kr.Flush(context.Background())
	})
	return err
}

func (kr *Keyring) flushLoop(every time.Duration) {
	defer close(kr.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-kr.stop:
			return
		case <-t.C:
			if err := kr.Flush(context.Background()); err != nil && kr.onFlushError != nil {
				kr.onFlushError(err)
			}
		}
	}
}
