package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// watchedStore is a test store that declares itself Watchable and hands
// the Keyring's watcher to the test, which plays the part of another
// gateway's changes arriving.
type watchedStore struct {
	*countingStore
	mu      sync.Mutex
	watcher KeyWatcher
	fail    atomic.Bool // store reads fail, as when etcd is unreachable
}

func (s *watchedStore) WatchKeys(ctx context.Context, w KeyWatcher) {
	s.mu.Lock()
	s.watcher = w
	s.mu.Unlock()
	<-ctx.Done()
}

func (s *watchedStore) KeyByHash(ctx context.Context, h Hash, stamp string) (Key, error) {
	if s.fail.Load() {
		return Key{}, errors.New("store unreachable")
	}
	return s.countingStore.KeyByHash(ctx, h, stamp)
}

func (s *watchedStore) w(t *testing.T) KeyWatcher {
	t.Helper()
	var w KeyWatcher
	testutil.Eventually(t, 10*time.Second, "the Keyring starting its watch", func() bool {
		s.mu.Lock()
		w = s.watcher
		s.mu.Unlock()
		return w != nil
	})
	return w
}

type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) now() time.Time            { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) add(d time.Duration)       { c.ns.Add(int64(d)) }
func (c *fakeClock) nowFunc() func() time.Time { return c.now }

func newWatchedKeyring(t *testing.T, clock *fakeClock) (*Keyring, *watchedStore) {
	t.Helper()
	s := openTestStore(t)
	ws := &watchedStore{countingStore: &countingStore{Store: s}}
	kr := NewKeyring(ws, Options{FlushInterval: time.Hour, MaxStale: 10 * time.Second, Now: clock.nowFunc()})
	t.Cleanup(func() { _ = kr.Close() })
	return kr, ws
}

func TestKeyringCachesUnknownKeys(t *testing.T) {
	kr, cs := newTestKeyring(t, Options{})
	ctx := context.Background()
	unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	for range 3 {
		if _, err := kr.VerifyWithin(ctx, unknown, nil, ""); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if n := cs.lookups.Load(); n != 1 {
		t.Fatalf("%d store lookups for 3 tries of one unknown key, want 1", n)
	}
}

func TestKeyringUnknownKeysCannotEvictKnownOnes(t *testing.T) {
	kr, cs := newTestKeyring(t, Options{CacheSize: 40})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	for range 500 {
		unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
		_, _ = kr.VerifyWithin(ctx, unknown, nil, "")
	}
	before := cs.lookups.Load()
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	if cs.lookups.Load() != before {
		t.Fatal("a flood of unknown keys evicted a known one")
	}
	if n := kr.cache.unknown.len(); n > 10 {
		t.Fatalf("%d unknown digests cached, bound is 10", n)
	}
}

func TestCacheFillLosesToConcurrentInvalidation(t *testing.T) {
	c := newKeyCache(10)
	h := HashKey("sk-whatever")
	gen := c.generation(h) // a lookup starts reading the store
	c.remove(h)            // the key changes meanwhile
	c.put(h, &Key{ID: "old"}, gen)
	if _, ok := c.get(h); ok {
		t.Fatal("a lookup that began before an invalidation filled the cache")
	}
	gen = c.generation(h)
	c.clear()
	c.put(h, nil, gen)
	if _, ok := c.get(h); ok {
		t.Fatal("a lookup that began before a clear filled the cache")
	}
	c.put(h, &Key{ID: "new"}, c.generation(h))
	if k, ok := c.get(h); !ok || k.ID != "new" {
		t.Fatal("an undisturbed fill was not cached")
	}
}

func TestWatchedKeyringTrustsCacheOnlyWhileCaughtUp(t *testing.T) {
	clock := newFakeClock()
	kr, ws := newWatchedKeyring(t, clock)
	ctx := context.Background()
	w := ws.w(t)
	m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})

	// Not caught up yet: every verification reads the store.
	for range 2 {
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := ws.lookups.Load(); n != 2 {
		t.Fatalf("%d lookups before the watch caught up, want 2", n)
	}
	w.CaughtUp(clock.now())
	for range 3 {
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := ws.lookups.Load(); n != 2 {
		t.Fatalf("%d lookups while caught up, want the cache to answer", n)
	}

	// The store becomes unreachable: cached keys keep working for MaxStale,
	// then verification fails closed.
	ws.fail.Store(true)
	clock.add(9 * time.Second)
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatalf("within MaxStale: %v", err)
	}
	unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	if _, err := kr.VerifyWithin(ctx, unknown, nil, ""); err == nil {
		t.Fatal("an unknown key was accepted while the store is unreachable")
	}
	clock.add(2 * time.Second)
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("past MaxStale with the store unreachable: %v, want a store error", err)
	}

	// Back in touch: the cache is trusted again.
	ws.fail.Store(false)
	w.CaughtUp(clock.now())
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	// An older report never moves the mark back.
	w.CaughtUp(clock.now().Add(-time.Hour))
	if !kr.cacheTrusted(clock.now()) {
		t.Fatal("an older CaughtUp report made the cache untrusted")
	}
}

func TestWatchedKeyringDropsWhatTheWatchReports(t *testing.T) {
	clock := newFakeClock()
	kr, ws := newWatchedKeyring(t, clock)
	ctx := context.Background()
	w := ws.w(t)
	w.CaughtUp(clock.now())
	a, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	b, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	for _, s := range []string{a.Secret, b.Secret} {
		if _, err := kr.VerifyWithin(ctx, s, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Another gateway deletes a, straight in the shared store; until the
	// change arrives the cache still answers, and then it does not.
	if _, err := ws.Store.DeleteKey(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyWithin(ctx, a.Secret, nil, ""); err != nil {
		t.Fatalf("before the change arrived: %v", err)
	}
	w.KeyChanged(a.Hash)
	if _, err := kr.VerifyWithin(ctx, a.Secret, nil, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after the change arrived: %v, want ErrNotFound", err)
	}
	// A lost watch forgets everything, including b, and keys it had
	// cached as unknown.
	if _, err := ws.Store.UpdateKey(ctx, b.ID, func(k *Key) error { k.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	w.ChangesLost()
	if _, err := kr.VerifyWithin(ctx, b.Secret, nil, ""); !errors.Is(err, ErrDisabled) {
		t.Fatalf("after ChangesLost: %v, want ErrDisabled", err)
	}
}
