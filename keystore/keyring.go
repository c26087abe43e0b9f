package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ownerRecheck is how long a key found orphaned stays refused from the
// cache before its owner is looked up again, so that a password user
// added back (to another gateway's store, say) gets their keys back
// without a reload.
const ownerRecheck = 30 * time.Second

// Defaults for Options fields left zero.
const (
	defaultCacheSize     = 100_000
	defaultFlushInterval = 5 * time.Second
)

// Options tune a Keyring.
type Options struct {
	// Prefix of minted keys. Default DefaultPrefix.
	Prefix string
	// CacheSize bounds the number of verified keys kept in memory.
	// Default 100 000.
	CacheSize int
	// FlushInterval is how often recorded last-used times are written.
	// Default 5s.
	FlushInterval time.Duration
	// OnFlushError, if set, is told when writing last-used times fails.
	OnFlushError func(error)
	// MaxStale applies to Watchable stores only: how long after the watch
	// last caught up cached lookups are still trusted. Past it, every
	// verification reads the store, and fails closed if it cannot.
	// Default 15s.
	MaxStale time.Duration
	// Policy says what keys may be and which password users exist.
	Policy Policy
	// Meter, if set, holds keys to the plans of the policy: a verified
	// key carries the counters it spends from (Key.Limits).
	Meter *Meter
	// Now returns the current time; tests may replace it. Default time.Now.
	Now func() time.Time
	// Observer, if set, is told of every store operation the Keyring
	// makes (e.g. to export their latency).
	Observer StoreObserver
}

// Keyring is the key service in front of a Store: it mints keys, verifies
// presented keys through a bounded in-memory cache, and records last-used
// times in memory, writing them in one transaction every FlushInterval.
// A Keyring does not own its Store; Close flushes but does not close it.
type Keyring struct {
	store    Store
	observer StoreObserver
	prefix   string
	policy   Policy
	meter    *Meter
	now      func() time.Time
	cache    *keyCache
	usage    usageLog

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
		opts.CacheSize = defaultCacheSize
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = defaultFlushInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxStale <= 0 {
		opts.MaxStale = defaultMaxStale
	}
	kr := &Keyring{
		store:        store,
		observer:     opts.Observer,
		prefix:       opts.Prefix,
		policy:       opts.Policy,
		meter:        opts.Meter,
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

// Store returns the underlying store.
func (kr *Keyring) Store() Store { return kr.store }

// Policy returns the key policy the Keyring applies.
func (kr *Keyring) Policy() *Policy { return &kr.policy }

// A ReadBudget bounds the store reads that keys not known to exist may
// cost a client (the caller decides what a client is and how much it
// may spend; caddymodule's unknown-key budget is one per client
// address). It is asked before such a read and, if it allows it, told
// after the read whether the key exists, so that it can count only the
// keys that did not: it counts the read as spent while it is in flight,
// and refunds it if the key exists. A budget is a function made once,
// not per request, so that a cached key costs no allocation.
type ReadBudget func(client string) (settle func(exists bool), ok bool)

// VerifyWithin checks a key presented by client and returns its record,
// which the caller must not modify. It returns ErrMalformedKey without
// touching the store when the format or checksum is wrong, ErrNotFound
// for unknown keys, ErrExpired, ErrDisabled or ErrOrphaned (a password
// user's key whose user no longer exists) for refused ones, and any
// other error only for store faults. A successful verification records
// the use in memory.
//
// A key not known to exist (not cached, or cached as unknown while the
// cache cannot be trusted) is read from the store only if budget allows,
// and refused with ErrOverBudget otherwise, without a store read; keys
// known to exist never consult it. A nil budget allows every read.
func (kr *Keyring) VerifyWithin(ctx context.Context, presented string, budget ReadBudget, client string) (*Key, error) {
	if err := ParseKey(presented, kr.prefix); err != nil {
		return nil, err
	}
	h := HashKey(presented)
	now := kr.now()
	k, ok := kr.cache.get(h)
	if !ok || !kr.cacheTrusted(now) || (k != nil && k.Orphaned && now.UnixNano()-k.ownerCheckedAt > int64(ownerRecheck)) {
		settle := func(bool) {}
		if k == nil && budget != nil {
			var allowed bool
			if settle, allowed = budget(client); !allowed {
				return nil, ErrOverBudget
			}
		}
		var err error
		k, err = kr.lookup(ctx, h, StampOf(presented, kr.prefix), now)
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
	if k.Orphaned {
		return nil, ErrOrphaned
	}
	if !k.usable(now) {
		return nil, ErrExpired
	}
	kr.usage.record(k.ID, now)
	return k, nil
}

// lookup reads h (stamped stamp, as its text begins) and, for a password
// user's key, whether its owner still exists, from the store, and caches
// the answer, found or not.
func (kr *Keyring) lookup(ctx context.Context, h Hash, stamp string, now time.Time) (*Key, error) {
	gen := kr.cache.generation(h)
	stored, err := kr.readKeyShared(ctx, h, stamp, gen)
	if errors.Is(err, ErrNotFound) {
		kr.cache.put(h, nil, gen)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var plan string
	if stored.Orphaned, plan, err = kr.ownerState(ctx, stored.Owner); err != nil {
		return nil, err
	}
	if stored.Plan != "" {
		plan = stored.Plan
	}
	stored.limits = kr.meter.limitsFor(&stored, kr.policy.plan(plan))
	stored.ownerCheckedAt = now.UnixNano()
	stored.memos = buildMemos(&stored)
	kr.cache.put(h, &stored, gen)
	return &stored, nil
}

// cacheTrusted reports whether cached lookups may answer at now: always
// for a store only this process writes, and for a Watchable store only
// while its watch caught up within MaxStale.
func (kr *Keyring) cacheTrusted(now time.Time) bool {
	return !kr.watched || now.UnixNano()-kr.caughtUp.Load() <= int64(kr.maxStale)
}

func (kr *Keyring) applyPendingUse(k *Key) {
	if t, ok := kr.usage.pendingFor(k.ID); ok && t.After(k.LastUsed) {
		k.LastUsed = t
	}
}

// Flush writes the recorded last-used times now.
func (kr *Keyring) Flush(ctx context.Context) error {
	pending := kr.usage.take()
	if len(pending) == 0 {
		return nil
	}
	if err := observeErr(kr, "touch_keys", func() error { return kr.store.TouchKeys(ctx, pending) }); err != nil {
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
