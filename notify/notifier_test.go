package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// receiver is a webhook endpoint on loopback that refuses the first
// deliveries, verifies every signature and counts what it accepted by
// webhook-id.
type receiver struct {
	*httptest.Server
	refuseFirst int64
	calls       atomic.Int64
	mu          sync.Mutex
	accepted    map[string]int
	bodies      map[string]payload
	badSig      atomic.Int64
}

func newReceiver(t *testing.T, refuseFirst int64) *receiver {
	r := &receiver{refuseFirst: refuseFirst, accepted: map[string]int{}, bodies: map[string]payload{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id := req.Header.Get("webhook-id")
		if !Verify(testSecret, id, req.Header.Get("webhook-timestamp"), body, req.Header.Get("webhook-signature"), time.Now(), 5*time.Minute) {
			r.badSig.Add(1)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if r.calls.Add(1) <= r.refuseFirst {
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		var p payload
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.accepted[id]++
		r.bodies[id] = p
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.accepted {
		out[k] = v
	}
	return out
}

func openStore(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pollCounter counts a Notifier's polls: each begins by reading the
// endpoint's queue, and the next begins only once it has delivered what
// it took. Two more polls than seen so far means one that began after now
// has ended.
type pollCounter struct {
	keystore.NoticeStore
	polls atomic.Int64
}

func (s *pollCounter) Notices(ctx context.Context, endpoint string) ([]keystore.Notice, error) {
	s.polls.Add(1)
	return s.NoticeStore.Notices(ctx, endpoint)
}

// shiftedClock is the real time, moved forward by what add was told.
type shiftedClock struct{ shift atomic.Int64 }

func (c *shiftedClock) now() time.Time      { return time.Now().Add(time.Duration(c.shift.Load())) }
func (c *shiftedClock) add(d time.Duration) { c.shift.Add(int64(d)) }

func fastConfig(s keystore.NoticeStore, urls ...string) Config {
	var eps []Endpoint
	for _, u := range urls {
		eps = append(eps, Endpoint{URL: u, Secret: testSecret})
	}
	return Config{Endpoints: eps, Store: s, Poll: 20 * time.Millisecond, FirstRetry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond, Lease: 5 * time.Second}
}

func key(id string) keystore.Key {
	return keystore.Key{ID: id, Title: "t", Preview: "sk-...abcd", Owner: keystore.PasswordUser("alice")}
}

// Deliveries the receiver refuses are tried again until it takes them;
// events queued before a stop are delivered after a restart; each event
// reaches each endpoint once, signed.
func TestDeliveryRetriesAndSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	s := openStore(t, path)
	r1, r2 := newReceiver(t, 3), newReceiver(t, 0)
	ctx, stop := context.WithCancel(context.Background())
	n := New(fastConfig(s, r1.URL, r2.URL))
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	for i := range 5 {
		if err := n.Publish(context.Background(), Event{Type: KeyRevoked, Key: key(string(rune('a' + i))), Details: map[string]any{"via": "api"}}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "five events at both endpoints", func() bool {
		return len(r1.snapshot()) == 5 && len(r2.snapshot()) == 5
	})
	// Queued while stopped: delivered by the next run on the same store.
	stop()
	<-done
	for i := range 3 {
		if err := n.Publish(context.Background(), Event{Type: KeyDisabled, Key: key(string(rune('x' + i)))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	defer s.Close()
	ctx, stop = context.WithCancel(context.Background())
	defer stop()
	go New(fastConfig(s, r1.URL, r2.URL)).Run(ctx)
	testutil.Eventually(t, 10*time.Second, "the three queued before the restart", func() bool {
		return len(r1.snapshot()) == 8 && len(r2.snapshot()) == 8
	})
	for _, r := range []*receiver{r1, r2} {
		for id, times := range r.snapshot() {
			if times != 1 {
				t.Errorf("%s accepted %d times", id, times)
			}
		}
		if r.badSig.Load() != 0 {
			t.Errorf("%d deliveries with a bad signature", r.badSig.Load())
		}
	}
	if r1.calls.Load() < 8+3 {
		t.Errorf("the refusing endpoint was called %d times, want at least 11", r1.calls.Load())
	}
	r1.mu.Lock()
	defer r1.mu.Unlock()
	for _, p := range r1.bodies {
		if p.Type == KeyRevoked && (p.Data["via"] != "api" || p.Data["owner"] != "alice" || p.Data["key_preview"] != "sk-...abcd") {
			t.Errorf("payload %+v", p)
		}
	}
}

// Two gateways on one store, each queuing the same expiring keys and
// polling the same queue: every event reaches the endpoint once.
func TestOneDeliveryPerEventAcrossGateways(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	r := newReceiver(t, 2)
	now := time.Now()
	var keys []keystore.Key
	for i := range 20 {
		k := key(string(rune('A' + i)))
		k.Expires = now.Add(time.Duration(i+1) * time.Hour) // within the default 7 days
		keys = append(keys, k)
	}
	far := key("far")
	far.Expires = now.Add(30 * 24 * time.Hour)
	keys = append(keys, far)
	cfg := fastConfig(s, r.URL)
	cfg.Keys = func(context.Context) ([]keystore.Key, error) { return keys, nil }
	cfg.ScanEvery = 30 * time.Millisecond // scans again and again
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	type gateway struct {
		scans atomic.Int64 // begun
		store *pollCounter
	}
	var gws [2]gateway
	for i := range gws {
		g := &gws[i]
		g.store = &pollCounter{NoticeStore: s}
		gcfg := cfg
		gcfg.Store = g.store
		gcfg.Keys = func(ctx context.Context) ([]keystore.Key, error) { g.scans.Add(1); return cfg.Keys(ctx) }
		n := New(gcfg)
		wg.Go(func() { n.Run(ctx) })
	}
	for range 2 { // and a revocation published by one of them
		_ = New(cfg).Publish(ctx, Event{Type: KeyRevoked, Key: key("gone"), ID: "msg_once"})
	}
	testutil.Eventually(t, 10*time.Second, "21 events", func() bool { return len(r.snapshot()) == 21 })
	// More scans and polls: nothing more arrives. Each gateway ends a
	// scan that began after now, then a poll that began after those
	// scans: whatever they queued again would have been delivered.
	for i := range gws {
		g, seen := &gws[i], gws[i].scans.Load()
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("gateway %d scanning again", i), func() bool { return g.scans.Load() >= seen+2 })
	}
	for i := range gws {
		g, seen := &gws[i], gws[i].store.polls.Load()
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("gateway %d polling again", i), func() bool { return g.store.polls.Load() >= seen+2 })
	}
	stop()
	wg.Wait()
	for id, times := range r.snapshot() {
		if times != 1 {
			t.Errorf("%s accepted %d times", id, times)
		}
	}
	if got := len(r.snapshot()); got != 21 {
		t.Fatalf("%d events, want 20 expiring and 1 revoked", got)
	}
}

// A notice nobody takes is given up after GiveUpAfter, and stays done.
func TestGivesUp(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	r := newReceiver(t, 1<<40)
	polled := &pollCounter{NoticeStore: s}
	cfg := fastConfig(polled, r.URL)
	cfg.GiveUpAfter = 200 * time.Millisecond
	var clock shiftedClock
	cfg.Now = clock.now
	var outcomes sync.Map // outcome → *atomic.Int64
	cfg.OnDelivery = func(typ, outcome string) {
		c, _ := outcomes.LoadOrStore(typ+" "+outcome, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
	}
	n := New(cfg)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go n.Run(ctx)
	if err := n.Publish(ctx, Event{Type: KeyLeaked, Key: key("k")}); err != nil {
		t.Fatal(err)
	}
	ep := cfg.Endpoints[0].ID()
	testutil.Eventually(t, 10*time.Second, "the notice given up", func() bool {
		c, ok := outcomes.Load("key.leaked given_up")
		return ok && c.(*atomic.Int64).Load() == 1
	})
	if q, err := s.Notices(ctx, ep); err != nil || len(q) != 0 {
		t.Fatalf("still queued after it was given up: %+v, %v", q, err)
	}
	calls := r.calls.Load()
	// Any further try would be due within MaxRetry: move the clock past
	// it, and let a poll begin and end.
	clock.add(cfg.MaxRetry)
	seen := polled.polls.Load()
	testutil.Eventually(t, 10*time.Second, "polling again", func() bool { return polled.polls.Load() >= seen+2 })
	if r.calls.Load() != calls {
		t.Fatal("deliveries went on after the notice was given up")
	}
	count := func(k string) int64 {
		c, ok := outcomes.Load(k)
		if !ok {
			return 0
		}
		return c.(*atomic.Int64).Load()
	}
	if count("key.leaked given_up") != 1 || count("key.leaked failed") != calls-1 || count("key.leaked delivered") != 0 {
		t.Fatalf("outcomes told: given_up %d, failed %d of %d calls, delivered %d",
			count("key.leaked given_up"), count("key.leaked failed"), calls, count("key.leaked delivered"))
	}
}

// An endpoint gets only the types it asked for.
func TestEndpointTypes(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	cfg := fastConfig(s, "http://127.0.0.1:1/leaks", "http://127.0.0.1:1/all")
	cfg.Endpoints[0].Types = []string{KeyLeaked}
	n := New(cfg)
	ctx := context.Background()
	if err := n.Publish(ctx, Event{Type: KeyRevoked, Key: key("a")}, Event{Type: KeyLeaked, Key: key("b")}); err != nil {
		t.Fatal(err)
	}
	leaksOnly, _ := s.Notices(ctx, cfg.Endpoints[0].ID())
	all, _ := s.Notices(ctx, cfg.Endpoints[1].ID())
	if len(leaksOnly) != 1 || leaksOnly[0].Type != KeyLeaked || len(all) != 2 {
		t.Fatalf("leaks-only endpoint %d notices, the other %d", len(leaksOnly), len(all))
	}
}

// credits.low goes to the endpoints whose threshold the balance is
// under, once per account, period and operator setting.
func TestCreditsLowThresholds(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	cfg := fastConfig(s, "http://127.0.0.1:1/low", "http://127.0.0.1:1/high")
	cfg.Endpoints[0].CreditsBelow, cfg.Endpoints[1].CreditsBelow = 10, 100
	n := New(cfg)
	ctx := context.Background()
	low := func(balance, period int64) LowCredits {
		return LowCredits{CreditsReserved: keystore.CreditsReserved{Account: "k", Balance: balance, Period: period}, Key: key("k")}
	}
	for _, c := range []LowCredits{low(50, 0), low(40, 0), low(5, 0), low(50, 1)} {
		if err := n.PublishCreditsLow(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	lowQ, _ := s.Notices(ctx, cfg.Endpoints[0].ID())
	highQ, _ := s.Notices(ctx, cfg.Endpoints[1].ID())
	if len(lowQ) != 1 || len(highQ) != 2 {
		t.Fatalf("threshold 10: %d notices (want 1), threshold 100: %d (want 2: one per period)", len(lowQ), len(highQ))
	}
	if !n.WantsCredits(99) || n.WantsCredits(100) {
		t.Fatal("WantsCredits")
	}
}
