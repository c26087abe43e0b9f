package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// gatedStore holds every KeyByHash until released, counting them.
type gatedStore struct {
	Store
	reads   atomic.Int64
	release chan struct{}
}

func (g *gatedStore) KeyByHash(ctx context.Context, h Hash, stamp string) (Key, error) {
	g.reads.Add(1)
	<-g.release
	return g.Store.KeyByHash(ctx, h, stamp)
}

// TestConcurrentMissesShareOneRead verifies one unknown key and one
// existing (not yet cached) key from 50 callers each at once: the store
// is read once for each. It runs in a synctest bubble, so that it can
// tell when every caller waits.
func TestConcurrentMissesShareOneRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTestStore(t)
		g := &gatedStore{Store: s, release: make(chan struct{})}
		kr := NewKeyring(g, Options{FlushInterval: time.Hour})
		t.Cleanup(func() { _ = kr.Close() })
		ctx := context.Background()
		minted, err := kr.newKey(Service("alice"), minted{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateKey(ctx, minted.Key, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
		var wg sync.WaitGroup
		var found, notFound atomic.Int64
		for range 50 {
			for _, key := range []string{minted.Secret, unknown} {
				wg.Go(func() {
					k, err := kr.VerifyWithin(ctx, key, nil, "")
					switch {
					case err == nil && k.ID == minted.ID:
						found.Add(1)
					case errors.Is(err, ErrNotFound):
						notFound.Add(1)
					default:
						t.Errorf("Verify: %v, %v", k, err)
					}
				})
			}
		}
		// Every caller has reached the store or joined a read in flight.
		synctest.Wait()
		close(g.release)
		wg.Wait()
		if n := g.reads.Load(); n != 2 {
			t.Fatalf("%d store reads for 100 concurrent misses of 2 digests, want 2", n)
		}
		if found.Load() != 50 || notFound.Load() != 50 {
			t.Fatalf("%d found, %d not found; want 50 each", found.Load(), notFound.Load())
		}
	})
}

// TestSharedReadNotReusedAfterInvalidation starts a read of a key, then
// deletes the key while the read is in flight: a lookup that starts after
// the delete must not receive the older read's answer.
func TestSharedReadNotReusedAfterInvalidation(t *testing.T) {
	s := openTestStore(t)
	g := &gatedStore{Store: s, release: make(chan struct{})}
	kr := NewKeyring(g, Options{FlushInterval: time.Hour})
	t.Cleanup(func() { _ = kr.Close() })
	ctx := context.Background()
	minted, err := kr.newKey(Service("alice"), minted{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, minted.Key, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { _, err := kr.VerifyWithin(ctx, minted.Secret, nil, ""); first <- err }()
	testutil.Eventually(t, 10*time.Second, "the first read", func() bool { return g.reads.Load() >= 1 })
	// Delete in the store directly (the gate holds only reads), then tell
	// the cache, as Keyring.Delete and the watch do.
	if _, err := s.DeleteKey(ctx, minted.ID); err != nil {
		t.Fatal(err)
	}
	kr.cache.remove(minted.Hash)
	second := make(chan error, 1)
	go func() { _, err := kr.VerifyWithin(ctx, minted.Secret, nil, ""); second <- err }()
	testutil.Eventually(t, 10*time.Second, "the second read", func() bool { return g.reads.Load() >= 2 })
	close(g.release)
	<-first
	if err := <-second; !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup after the delete: %v, want ErrNotFound", err)
	}
}

// TestVerifyWithinBudget refuses unknown keys without a store read once
// the budget says no, never consults it for known keys, and tells it
// whether each key it allowed exists.
func TestVerifyWithinBudget(t *testing.T) {
	kr, cs := newTestKeyring(t, Options{})
	ctx := context.Background()
	m, err := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var settled []bool
	yes := func(string) (func(bool), bool) { return func(exists bool) { settled = append(settled, exists) }, true }
	if _, err := kr.VerifyWithin(ctx, m.Secret, yes, "client"); err != nil { // read, then cached
		t.Fatal(err)
	}
	asked := 0
	no := func(string) (func(bool), bool) { asked++; return nil, false }
	before := cs.lookups.Load()
	for range 100 {
		unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
		if _, err := kr.VerifyWithin(ctx, unknown, no, "client"); !errors.Is(err, ErrOverBudget) {
			t.Fatalf("unknown key over budget: %v", err)
		}
		if _, err := kr.VerifyWithin(ctx, m.Secret, no, "client"); err != nil {
			t.Fatalf("known key: %v", err)
		}
	}
	if n := cs.lookups.Load() - before; n != 0 || asked != 100 {
		t.Fatalf("%d store reads, budget asked %d times; want 0 and 100", n, asked)
	}
	unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	if _, err := kr.VerifyWithin(ctx, unknown, yes, "client"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown key within budget: %v", err)
	}
	// Cached as unknown, and the cache is trusted: no read, no charge.
	if _, err := kr.VerifyWithin(ctx, unknown, no, "client"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cached unknown key: %v", err)
	}
	if len(settled) != 2 || !settled[0] || settled[1] {
		t.Fatalf("budget told %v, want [true false] (the valid key existed, the unknown one not)", settled)
	}
}

// A lookup that missed the cache while a read of the same unknown key
// was ending, and so starts a read of its own after it, finds the answer
// the first read left in the cache instead of reading again.
func TestSharedReadAfterAnEndedOne(t *testing.T) {
	kr, cs := newTestKeyring(t, Options{})
	key, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	h := HashKey(key)
	gen := kr.cache.generation(h) // both lookups missed the cache here
	for range 2 {
		if _, err := kr.readKeyShared(context.Background(), h, StampOf(key, DefaultPrefix), gen); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	if n := cs.lookups.Load(); n != 1 {
		t.Fatalf("%d store reads for one unknown key, want 1", n)
	}
}
