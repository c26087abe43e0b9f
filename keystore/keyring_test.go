package keystore

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// countingStore counts reads and writes that reach a real store.
type countingStore struct {
	Store
	lookups, touches atomic.Int64
}

func (c *countingStore) KeyByHash(ctx context.Context, h Hash, stamp string) (Key, error) {
	c.lookups.Add(1)
	return c.Store.KeyByHash(ctx, h, stamp)
}

func (c *countingStore) TouchKeys(ctx context.Context, m map[string]time.Time) error {
	c.touches.Add(1)
	return c.Store.TouchKeys(ctx, m)
}

func newTestKeyring(t testing.TB, opts Options) (*Keyring, *countingStore) {
	t.Helper()
	s := openTestStore(t)
	cs := &countingStore{Store: s}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Hour // tests flush explicitly
	}
	kr := NewKeyring(cs, opts)
	t.Cleanup(func() { _ = kr.Close() })
	return kr, cs
}

func TestKeyringMintVerify(t *testing.T) {
	kr, cs := newTestKeyring(t, Options{})
	ctx := context.Background()
	m, err := kr.Mint(ctx, operatorFor("alice"), KeyRequest{Title: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Preview != "sk-..."+m.Secret[len(m.Secret)-4:] || m.Hash != HashKey(m.Secret) {
		t.Fatalf("minted %+v", m)
	}
	for range 3 {
		k, err := kr.VerifyWithin(ctx, m.Secret, nil, "")
		if err != nil || k.Owner != Service("alice") || k.ID != m.ID || k.Title != "ci" {
			t.Fatalf("Verify = %+v, %v", k, err)
		}
	}
	if n := cs.lookups.Load(); n != 1 {
		t.Fatalf("%d store lookups for 3 verifications, want 1 (then cached)", n)
	}
}

func TestKeyringRefusesWithoutStoreLookup(t *testing.T) {
	kr, cs := newTestKeyring(t, Options{})
	ctx := context.Background()
	m, err := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	typo := []byte(m.Secret)
	typo[20] ^= 1
	for _, bad := range []string{"", "sk-short", string(typo), "Bearer " + m.Secret, m.Secret + " "} {
		if _, err := kr.VerifyWithin(ctx, bad, nil, ""); !errors.Is(err, ErrMalformedKey) {
			t.Errorf("Verify(%q) = %v, want ErrMalformedKey", bad, err)
		}
	}
	if n := cs.lookups.Load(); n != 0 {
		t.Fatalf("malformed keys caused %d store lookups", n)
	}
	unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	if _, err := kr.VerifyWithin(ctx, unknown, nil, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestKeyringDeleteInvalidatesCache(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Delete(ctx, operator, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key verified: %v", err)
	}
}

func TestKeyringExpiry(t *testing.T) {
	now := time.Now()
	var offset atomic.Int64
	kr, _ := newTestKeyring(t, Options{Now: func() time.Time { return now.Add(time.Duration(offset.Load())) }})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{Lifetime: time.Hour})
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(time.Hour))
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired key (cached) verified: %v", err)
	}
}

func TestKeyringCoalescesLastUsed(t *testing.T) {
	kr, cs := newTestKeyring(t, Options{})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	for range 100 {
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := cs.touches.Load(); n != 0 {
		t.Fatalf("%d writes before flush, want 0", n)
	}
	// Pending times show in listings before they are written.
	list, _ := kr.KeysByOwner(ctx, Service("alice"))
	if len(list) != 1 || list[0].LastUsed.IsZero() {
		t.Fatalf("pending last_used not listed: %+v", list)
	}
	if err := kr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := cs.touches.Load(); n != 1 {
		t.Fatalf("%d writes for 100 uses, want 1", n)
	}
	stored, _ := cs.Store.KeyByHash(ctx, m.Hash, "")
	if stored.LastUsed.IsZero() {
		t.Fatal("last_used not written")
	}
}

func TestKeyringCloseFlushes(t *testing.T) {
	s := openTestStore(t)
	kr := NewKeyring(s, Options{FlushInterval: time.Hour})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := kr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := kr.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if k, _ := s.KeyByHash(ctx, m.Hash, ""); k.LastUsed.IsZero() {
		t.Fatal("Close did not write last_used")
	}
}

// The background flush writes last-used times every FlushInterval (in a
// bubble of fake time: no waiting).
func TestKeyringPeriodicFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kr, cs := newTestKeyring(t, Options{FlushInterval: time.Minute})
		ctx := context.Background()
		m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if k, _ := cs.Store.KeyByHash(ctx, m.Hash, ""); !k.LastUsed.IsZero() {
			t.Fatal("last_used written before the flush interval")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if k, _ := cs.Store.KeyByHash(ctx, m.Hash, ""); k.LastUsed.IsZero() {
			t.Fatal("the background flush did not write last_used after its interval")
		}
	})
}

func TestKeyringCacheBounded(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{CacheSize: 10})
	ctx := context.Background()
	var secrets []string
	for range 50 {
		m, err := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, m.Secret)
	}
	for _, s := range secrets {
		if _, err := kr.VerifyWithin(ctx, s, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := kr.cache.keys.len(); n > 10 {
		t.Fatalf("cache holds %d entries, bound is 10", n)
	}
	// Evicted keys still verify from the store.
	for _, s := range secrets {
		if _, err := kr.VerifyWithin(ctx, s, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
}

func TestKeyringConcurrentUse(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{CacheSize: 8})
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 20 {
				m, err := kr.Mint(ctx, operatorFor("u"+strconv.Itoa(w)), KeyRequest{})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
					t.Error(err)
				}
				if i%5 == 0 {
					_ = kr.Flush(ctx)
				}
				if i%3 == 0 {
					if _, err := kr.Delete(ctx, operator, m.ID); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestKeyringFlushWhileVerifying(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{FlushInterval: time.Millisecond})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{})
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
			t.Fatal(err)
		}
		_ = kr.Flush(ctx)
	}
}

// operator acts as the admin API does: on any key, with any scope.
var operator = Actor{Operator: true}

// operatorFor is an operator acting for the service owner name, which
// needs no user to exist.
func operatorFor(name string) Actor { return Actor{Owner: Service(name), Operator: true} }

// The observer hears of every store operation the Keyring makes, by name.
func TestKeyringObservesStoreOperations(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	kr, _ := newTestKeyring(t, Options{Observer: func(op string, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if took < 0 {
			t.Errorf("%s took %v", op, took)
		}
		seen[op]++
	}})
	ctx := context.Background()
	m, err := kr.Mint(ctx, Actor{Owner: Service("svc"), Operator: true}, KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	if _, err := kr.VerifyWithin(ctx, unknown, nil, ""); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := kr.Delete(ctx, Actor{Owner: Service("svc"), Operator: true}, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.StoredUsers(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, op := range []string{"create_key", "key_by_hash", "delete_key", "users"} {
		if seen[op] == 0 {
			t.Errorf("no %s observed; saw %v", op, seen)
		}
	}
}
