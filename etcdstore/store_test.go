package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore/storetest"
)

var prefixes atomic.Int64

// openStore returns a store under a prefix of its own on cluster c.
func openStore(t *testing.T, c *etcdtest.Cluster, opts Options) *Store {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = fmt.Sprintf("/test-%d/", prefixes.Add(1))
	}
	s, err := Open(clientConfig(c), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// clientConfig connects to every member of c, quietly.
func clientConfig(c *etcdtest.Cluster) clientv3.Config {
	return clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
}

func TestConformance(t *testing.T) {
	c := etcdtest.Start(t, 1)
	storetest.Run(t, func(t *testing.T) keystore.Store { return openStore(t, c, Options{}) })
}

func TestOpenFailsClearlyWhenNoEtcdAnswers(t *testing.T) {
	start := time.Now()
	_, err := Open(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond, Logger: zap.NewNop()}, Options{})
	if err == nil {
		t.Fatal("Open succeeded with no etcd to talk to")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Open took %v to fail", took)
	}
	t.Logf("error: %v", err)
}

// recorder is a KeyWatcher that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	created  map[keystore.Hash]int
	changed  map[keystore.Hash]int
	lost     int
	caughtUp time.Time
}

func newRecorder() *recorder {
	return &recorder{created: make(map[keystore.Hash]int), changed: make(map[keystore.Hash]int)}
}

func (r *recorder) KeyCreated(h keystore.Hash) { r.mu.Lock(); r.created[h]++; r.mu.Unlock() }
func (r *recorder) KeyChanged(h keystore.Hash) { r.mu.Lock(); r.changed[h]++; r.mu.Unlock() }
func (r *recorder) ChangesLost()               { r.mu.Lock(); r.lost++; r.mu.Unlock() }
func (r *recorder) CaughtUp(at time.Time) {
	r.mu.Lock()
	if at.After(r.caughtUp) {
		r.caughtUp = at
	}
	r.mu.Unlock()
}

func (r *recorder) state() (changed map[keystore.Hash]int, lost int, caughtUp time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed = make(map[keystore.Hash]int, len(r.changed))
	for _, m := range []map[keystore.Hash]int{r.created, r.changed} {
		for h, n := range m {
			changed[h] += n
		}
	}
	return changed, r.lost, r.caughtUp
}

func watch(t *testing.T, s *Store) *recorder {
	t.Helper()
	r := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.WatchKeys(ctx, r)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

func TestWatchReportsChangesFromAnotherStore(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := openStore(t, c, Options{SyncInterval: 50 * time.Millisecond})
	b := New(a.Client(), Options{Prefix: a.prefix, SyncInterval: 50 * time.Millisecond})
	r := watch(t, b)
	testutil.Eventually(t, 10*time.Second, "the watch has caught up", func() bool { _, _, at := r.state(); return !at.IsZero() })
	if _, lost, _ := r.state(); lost != 1 {
		t.Fatalf("ChangesLost called %d times on start, want 1", lost)
	}

	ctx := context.Background()
	kr := keystore.NewKeyring(a, keystore.Options{FlushInterval: time.Hour})
	defer kr.Close()
	m, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := kr.ChangeDisabled(ctx, m.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Delete(ctx, keystore.Actor{Operator: true}, m.ID); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "create, disable and delete were reported", func() bool {
		changed, _, _ := r.state()
		return changed[m.Hash] == 3
	})
	// Last-used writes are not changes of the key.
	other, _ := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{})
	if err := a.TouchKeys(ctx, map[string]time.Time{other.ID: time.Now()}); err != nil {
		t.Fatal(err)
	}
	before, _, _ := r.state()
	caughtUp := time.Now()
	testutil.Eventually(t, 10*time.Second, "the watch caught up past the last-used write", func() bool { _, _, at := r.state(); return at.After(caughtUp) })
	if changed, _, _ := r.state(); changed[other.Hash] != before[other.Hash] {
		t.Fatal("a last-used write was reported as a change of the key")
	}
}

func TestWatchResumesWhereItStopped(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := context.Background()
	// The watching store talks to the first member only; changes are made
	// through the others while it is down.
	watcher, err := Open(clientv3.Config{Endpoints: c.Endpoints()[:1], Logger: zap.NewNop()}, Options{Prefix: "/resume/", SyncInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	writer, err := Open(clientv3.Config{Endpoints: c.Endpoints()[1:], Logger: zap.NewNop()}, Options{Prefix: "/resume/"})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	k := storeKey(t, writer)
	r := watch(t, watcher)
	testutil.Eventually(t, 10*time.Second, "the watch has caught up", func() bool { _, _, at := r.state(); return !at.IsZero() })

	c.Members[0].Kill()
	if _, err := writer.DeleteKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	c.Members[0].Restart(t)
	testutil.Eventually(t, 10*time.Second, "the delete made while the watch was down is reported", func() bool {
		changed, _, _ := r.state()
		return changed[k.Hash] > 0
	})
	if _, lost, _ := r.state(); lost != 1 {
		t.Fatalf("ChangesLost called %d times, want only the first start: the watch should resume", lost)
	}
}

func TestWatchStartsAfreshWhenItsRevisionIsCompacted(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := openStore(t, c, Options{})
	ctx := context.Background()
	storeKey(t, s)
	resp, err := s.cli.Put(ctx, s.prefix+"filler", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	done := make(chan int64, 1)
	go func() { done <- s.follow(ctx, newRecorder(), 2, make(chan syncPoint)) }()
	select {
	case next := <-done:
		if next != 0 {
			t.Fatalf("resuming from a compacted revision returned %d, want 0 (start afresh)", next)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a watch from a compacted revision did not end")
	}
}

// storeKey creates a key in s.
func storeKey(t testing.TB, s *Store) keystore.Key {
	t.Helper()
	secret, id, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
	k := keystore.Key{ID: id, Hash: keystore.HashKey(secret), Owner: keystore.PasswordUser("alice"), Created: time.Now().Truncate(time.Microsecond)}
	if err := s.CreateKey(context.Background(), k, keystore.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return k
}

// storeOps counts the store operations of a Keyring it observes
// (keystore.Options.Observer).
type storeOps struct{ n atomic.Int64 }

func (o *storeOps) observe(string, time.Duration, error) { o.n.Add(1) }

// verifiedFromCache reports whether kr verifies secret without a store
// operation, as it does once it has the key cached and trusts its cache.
func verifiedFromCache(kr *keystore.Keyring, ops *storeOps, secret string) bool {
	before := ops.n.Load()
	_, err := kr.VerifyWithin(context.Background(), secret, nil, "")
	return err == nil && ops.n.Load() == before
}

// mintCached mints a key and uses it until kr, observed by ops, has it
// cached and trusted.
func mintCached(t *testing.T, kr *keystore.Keyring, ops *storeOps) keystore.Minted {
	t.Helper()
	ctx := context.Background()
	m, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the key verifies", func() bool { _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); return err == nil })
	// Until the key's creation has arrived (it drops fills in flight) and
	// the watch has caught up, a verification reads the store.
	testutil.Eventually(t, 10*time.Second, "the key verified from the cache", func() bool { return verifiedFromCache(kr, ops, m.Secret) })
	return m
}

func TestKeyringFailsClosedWhenEtcdIsGone(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := openStore(t, c, Options{SyncInterval: 50 * time.Millisecond, RequestTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	const maxStale = 2 * time.Second
	ops := new(storeOps)
	kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour, MaxStale: maxStale, Observer: ops.observe})
	defer kr.Close()
	m := mintCached(t, kr, ops)

	c.Members[0].Kill()
	stopped := time.Now()
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatalf("a recently seen key was refused right after etcd went away: %v", err)
	}
	unknown, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
	if _, err := kr.VerifyWithin(ctx, unknown, nil, ""); err == nil || errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown key with etcd gone: %v, want a store error", err)
	}
	if _, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{}); err == nil {
		t.Fatal("minted with etcd gone")
	}
	testutil.Eventually(t, 10*time.Second, "the recently seen key is refused", func() bool { _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); return err != nil })
	if took := time.Since(stopped); took < maxStale-100*time.Millisecond {
		t.Fatalf("the cached key was refused after %v, before MaxStale", took)
	}

	c.Members[0].Restart(t)
	testutil.Eventually(t, 10*time.Second, "the key verifies again", func() bool { _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); return err == nil })
}

// TestMemberWithoutQuorumIsNotTrusted connects a Keyring to one member of
// three and stops the other two: the member still runs but has no leader,
// so it cannot confirm the watch is complete. Keys seen recently keep
// working for MaxStale, then are refused, until quorum returns.
func TestMemberWithoutQuorumIsNotTrusted(t *testing.T) {
	c := etcdtest.Start(t, 3)
	s, err := Open(clientv3.Config{Endpoints: c.Endpoints()[:1], DialTimeout: 5 * time.Second, Logger: zap.NewNop()},
		Options{Prefix: "/quorum/", SyncInterval: 50 * time.Millisecond, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const maxStale = 2 * time.Second
	ops := new(storeOps)
	kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour, MaxStale: maxStale, Observer: ops.observe})
	defer kr.Close()
	m := mintCached(t, kr, ops)

	c.Members[1].Kill()
	c.Members[2].Kill()
	cut := time.Now()
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatalf("right after quorum was lost: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "the key is refused without quorum", func() bool { _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); return err != nil })
	if took := time.Since(cut); took < maxStale-100*time.Millisecond {
		t.Fatalf("refused after %v, before MaxStale", took)
	}
	if since, _, _ := kr.Staleness(); since < maxStale {
		t.Fatalf("staleness %v while refusing", since)
	}

	c.Restart(t)
	testutil.Eventually(t, 10*time.Second, "the key verifies with quorum back", func() bool { _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); return err == nil })
}
