package keystore

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

func newTestMeter(t testing.TB, s Store, opts MeterOptions) *Meter {
	t.Helper()
	m, err := NewMeter(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func meterKey(id string) *Key {
	return &Key{ID: id, Owner: Service("svc"), Created: time.Now()}
}

// takeAll runs n requests of cost at once against l and counts those
// allowed.
func takeAll(t *testing.T, l *Limits, n int, cost int64) int64 {
	t.Helper()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			v, err := l.Take(context.Background(), cost)
			if err != nil {
				t.Error(err)
			}
			if v.Allowed {
				v.Charge.Commit()
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	return allowed.Load()
}

func TestMeterRateLimit(t *testing.T) {
	s := openTestStore(t)
	m := newTestMeter(t, s, MeterOptions{})
	plan := &Plan{Name: "p", Rates: []Rate{{Name: "burst", Limit: 5, Window: 10 * time.Second}}}
	l := m.limitsFor(meterKey("k1"), plan)
	if got := takeAll(t, l, 50, 0); got != 5 {
		t.Fatalf("%d of 50 concurrent requests allowed under a limit of 5", got)
	}
	v, _ := l.Take(context.Background(), 0)
	if v.Allowed || v.Reason != RateLimited || v.Name != "burst" || v.RetryAfter <= 0 || v.RetryAfter > 11*time.Second {
		t.Fatalf("refusal: %+v", v)
	}
	// Another key has its own window; the same account (a rotation) not.
	if got := takeAll(t, m.limitsFor(meterKey("k2"), plan), 10, 0); got != 5 {
		t.Fatalf("another key: %d allowed", got)
	}
	successor := &Key{ID: "k3", Account: "k1", Owner: Service("svc"), Created: time.Now()}
	if v, _ := m.limitsFor(successor, plan).Take(context.Background(), 0); v.Allowed {
		t.Fatal("a rotated key starts with fresh counters")
	}
}

func TestPartOf(t *testing.T) {
	for _, tc := range []struct {
		total int64
		count int
		want  []int64
	}{
		{100, 3, []int64{34, 33, 33}},
		{10, 4, []int64{3, 3, 2, 2}},
		{10, 1, []int64{10}},
		{2, 3, []int64{1, 1, 0}},
		{0, 2, []int64{0, 0}},
		{1000, 7, []int64{143, 143, 143, 143, 143, 143, 142}},
	} {
		var got []int64
		for i := range tc.count {
			got = append(got, PartOf(tc.total, i, tc.count))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("parts of %d over %d gateways: %v, want %v", tc.total, tc.count, got, tc.want)
		}
	}
	// Whatever the total and the count, the parts add up to the total,
	// differ by at most one, and the larger come first.
	for total := range int64(60) {
		for count := 1; count <= 12; count++ {
			sum, prev := int64(0), int64(-1)
			for i := range count {
				p := PartOf(total, i, count)
				if prev >= 0 && (p > prev || prev-p > 1) {
					t.Fatalf("parts of %d over %d: index %d has %d after %d", total, count, i, p, prev)
				}
				sum, prev = sum+p, p
			}
			if sum != total {
				t.Fatalf("parts of %d over %d gateways add up to %d", total, count, sum)
			}
		}
	}
	// A share that cannot be (no gateways, an index outside them) is a
	// gateway alone.
	for _, s := range [][2]int{{0, 0}, {-1, 3}, {3, 3}, {0, -2}} {
		if got := PartOf(10, s[0], s[1]); got != 10 {
			t.Errorf("PartOf(10, %d, %d) = %d, want the whole 10", s[0], s[1], got)
		}
	}
}

func TestMeterEnforcesItsPart(t *testing.T) {
	s := openTestStore(t)
	m := newTestMeter(t, s, MeterOptions{})
	m.SetShare(2, 3)
	l := m.limitsFor(meterKey("k"), &Plan{Name: "p", Rates: []Rate{{Name: "r", Limit: 100, Window: time.Minute}}})
	if got := takeAll(t, l, 200, 0); got != 33 {
		t.Fatalf("the third of 3 gateways admits %d of a limit of 100, want 33", got)
	}
}

// Credits are never over-spent, however many requests race for the last
// of them, and nothing is lost: 1000 credits at 3 a request are exactly
// 333 requests, and the last credit stays.
func TestMeterCreditsExact(t *testing.T) {
	s := openTestStore(t)
	m := newTestMeter(t, s, MeterOptions{Ledger: filepath.Join(t.TempDir(), "ledger")})
	plan := &Plan{Name: "p", Credits: &Credits{Amount: 1000}}
	l := m.limitsFor(meterKey("k"), plan)
	if got := takeAll(t, l, 600, 3); got != 333 {
		t.Fatalf("%d requests of cost 3 admitted on 1000 credits, want 333", got)
	}
	v, _ := l.Take(context.Background(), 3)
	if v.Allowed || v.Reason != OutOfCredits || v.Credits != 1 {
		t.Fatalf("after the last request: %+v", v)
	}
	if v, _ := l.Take(context.Background(), 1); !v.Allowed || v.Credits != 0 {
		t.Fatalf("the last credit for a request of cost 1: %+v", v)
	}
	if v, _ := l.Take(context.Background(), 0); !v.Allowed {
		t.Fatalf("a free request without credits: %+v", v)
	}
}

// Two gateways (two meters over one store) share an account exactly, and
// credits one of them holds while idle become usable by the other once
// it has been idle for IdleReturn, even while a request there still holds
// part of them (in a bubble of fake time).
func TestMeterCreditsAcrossMeters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTestStore(t)
		a := newTestMeter(t, s, MeterOptions{})
		b := newTestMeter(t, s, MeterOptions{})
		plan := &Plan{Name: "p", Credits: &Credits{Amount: 1000}}
		k := meterKey("k")
		la, lb := a.limitsFor(k, plan), b.limitsFor(k, plan)
		// a holds a block now, and a request in flight holds 3 of it.
		inFlight, _ := la.Take(context.Background(), 3)
		if !inFlight.Allowed {
			t.Fatal(inFlight)
		}
		defer inFlight.Charge.Commit()
		// b spends everything the store has; a still holds a block.
		total := 1 + takeAll(t, lb, 400, 3)
		if total >= 333 {
			t.Fatalf("%d admitted while a holds a block: the test tests nothing", total)
		}
		// What a still holds goes back once a is idle, and b spends it.
		time.Sleep(defaultIdleReturn + time.Second)
		synctest.Wait()
		if got := total + takeAll(t, lb, 400, 3); got != 333 {
			t.Fatalf("%d requests admitted across two meters, want 333", got)
		}
	})
}

func TestMeterRefill(t *testing.T) {
	s := openTestStore(t)
	c := newClock()
	m := newTestMeter(t, s, MeterOptions{Now: c.now})
	k := &Key{ID: "k", Owner: Service("svc"), Created: c.now()}
	l := m.limitsFor(k, &Plan{Name: "p", Credits: &Credits{Amount: 10, Refill: time.Hour}})
	for i := range 10 {
		if v, _ := l.Take(context.Background(), 1); !v.Allowed {
			t.Fatalf("request %d: %+v", i, v)
		}
	}
	v, _ := l.Take(context.Background(), 1)
	if v.Allowed || v.RetryAfter <= 59*time.Minute || v.RetryAfter > time.Hour {
		t.Fatalf("out of credits: %+v, want a retry after the refill in an hour", v)
	}
	c.advance(time.Hour)
	if v, _ := l.Take(context.Background(), 1); !v.Allowed || v.Credits != 9 {
		t.Fatalf("after the refill: %+v, want 9 left of a replaced balance of 10", v)
	}
	// Unspent credits do not pile up: the balance is replaced.
	c.advance(3 * time.Hour)
	if v, _ := l.Take(context.Background(), 1); v.Credits != 9 {
		t.Fatalf("three periods later: %+v", v)
	}
}

func TestMeterPerOwnerCredits(t *testing.T) {
	s := openTestStore(t)
	m := newTestMeter(t, s, MeterOptions{})
	plan := &Plan{Name: "p", Credits: &Credits{Amount: 10, PerOwner: true},
		OwnerRates: []Rate{{Name: "owner", Limit: 100, Window: time.Minute}}}
	owner := Service("team")
	var total int64
	for i := range 3 {
		l := m.limitsFor(&Key{ID: "k" + strconv.Itoa(i), Owner: owner, Created: time.Now()}, plan)
		total += takeAll(t, l, 10, 1)
	}
	if total != 10 {
		t.Fatalf("three keys of one owner spent %d of a shared 10", total)
	}
}

// dieNow kills the process, as kill -9 would: no deferred call runs.
func dieNow() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// runKilledChild closes s, runs test again in a child process (which sees
// APIKEYS_METER_CHILD_DIR=dir and env, opens the store in dir and kills
// itself), checks that it died of SIGKILL, and reopens the store.
func runKilledChild(t *testing.T, s *memStore, dir, test string, env ...string) *memStore {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^"+test+"$")
	cmd.Env = append(append(os.Environ(), "APIKEYS_METER_CHILD_DIR="+dir), env...)
	if err := s.Close(); err != nil { // the child opens the file
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v\n%s", err, out)
	}
	s, err = openFileStore(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A gateway killed with -9 loses no credits: the ledger it wrote into
// memory survives it, and the next process gives back what it had not
// spent. Run across two processes: this test runs itself as the child.
func TestMeterCreditsSurviveKill(t *testing.T) {
	dir, child := killChildDir(t)
	s, plan, k := killFixture(t, dir)
	open := func() *Meter {
		m, err := NewMeter(s, MeterOptions{Ledger: filepath.Join(dir, "ledger")})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if child {
		// Spend 200 requests of 3, holding a block with some left, and die
		// without a word.
		m := open()
		l := m.limitsFor(k, plan)
		for range 100 {
			v, _ := l.Take(context.Background(), 3)
			if !v.Allowed {
				t.Fatal("refused")
			}
			v.Charge.Commit()
		}
		// Requests in flight when it dies were never answered: what they
		// hold goes back too, also when the block they hold from was
		// replaced meanwhile (100 more requests take new blocks of 125).
		for range 10 {
			if v, _ := l.Take(context.Background(), 3); !v.Allowed {
				t.Fatal("refused")
			}
		}
		for range 100 {
			v, _ := l.Take(context.Background(), 3)
			if !v.Allowed {
				t.Fatal("refused")
			}
			v.Charge.Commit()
		}
		dieNow()
	}
	s = runKilledChild(t, s, dir, "TestMeterCreditsSurviveKill")
	defer s.Close()
	if acct, _ := s.CreditAccount(context.Background(), "killed"); acct.Balance >= 400 {
		t.Fatalf("the child held no block when it died (balance %d): the test tests nothing", acct.Balance)
	}
	m := open()
	defer m.Close()
	admitted := 200 + takeAll(t, m.limitsFor(k, plan), 400, 3)
	if admitted != 333 {
		t.Fatalf("%d requests of 3 admitted on 1000 credits across a kill -9, want 333", admitted)
	}
}

// dyingStore kills the process at the first UpdateCredits once armed:
// before the store sees it, or after the store applied it and before the
// caller hears of it.
type dyingStore struct {
	Store
	armed atomic.Bool
	after bool
}

func (d *dyingStore) UpdateCredits(ctx context.Context, id string, fn func(*CreditAccount, bool) error) (CreditAccount, error) {
	if d.armed.Load() && !d.after {
		dieNow()
	}
	a, err := d.Store.UpdateCredits(ctx, id, fn)
	if d.armed.Load() && d.after {
		dieNow()
	}
	return a, err
}

// A gateway killed while it reserves a block of credits: the block was
// taken from the store or not; either way the credits a restart on the
// same ledger can spend add up to the balance exactly.
func TestMeterCreditsSurviveKillDuringReservation(t *testing.T) {
	for _, when := range []string{"before", "after"} {
		t.Run("killed "+when+" the store applied it", func(t *testing.T) {
			if os.Getenv("APIKEYS_METER_CHILD_DIR") != "" && os.Getenv("APIKEYS_METER_CHILD_WHEN") != when {
				t.Skip("the child runs the other case")
			}
			dir, child := killChildDir(t)
			s, plan, k := killFixture(t, dir)
			ledger := filepath.Join(dir, "ledger")
			if child {
				// Blocks of 41 requests of 3: spend three of them, then
				// die in the fourth reservation.
				store := &dyingStore{Store: s, after: when == "after"}
				m, err := NewMeter(store, MeterOptions{Ledger: ledger})
				if err != nil {
					t.Fatal(err)
				}
				l := m.limitsFor(k, plan)
				for i := range 124 {
					if i == 123 {
						store.armed.Store(true)
					}
					v, _ := l.Take(context.Background(), 3)
					if !v.Allowed {
						t.Fatal("refused")
					}
					v.Charge.Commit()
				}
				t.Fatal("the fourth block was reserved without dying")
			}
			s = runKilledChild(t, s, dir, "TestMeterCreditsSurviveKillDuringReservation", "APIKEYS_METER_CHILD_WHEN="+when)
			defer s.Close()
			acct, _ := s.CreditAccount(context.Background(), "killed")
			if wantBalance := map[string]int64{"before": 1000 - 3*123, "after": 1000 - 4*123}[when]; acct.Balance != wantBalance {
				t.Fatalf("the store's balance after the kill: %d, want %d: the child did not die where the test means", acct.Balance, wantBalance)
			}
			m, err := NewMeter(s, MeterOptions{Ledger: ledger})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if admitted := 123 + takeAll(t, m.limitsFor(k, plan), 400, 3); admitted != 333 {
				t.Fatalf("%d requests of 3 admitted on 1000 credits across a kill -9 in a reservation, want 333", admitted)
			}
		})
	}
}

func BenchmarkTake(b *testing.B) {
	s := openTestStore(b)
	m, err := NewMeter(s, MeterOptions{Ledger: filepath.Join(b.TempDir(), "ledger")})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	l := m.limitsFor(meterKey("k"), &Plan{Name: "p",
		Rates:   []Rate{{Name: "r", Limit: 1 << 40, Window: time.Minute}},
		Credits: &Credits{Amount: 1 << 40}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v, err := l.Take(ctx, 1)
		if err != nil || !v.Allowed {
			b.Fatal(v, err)
		}
		v.Charge.Commit()
	}
}

// A Keyring with a Meter gives each verified key the counters of its
// plan: its own, its owner's, or the default; rotation keeps them.
func TestKeyringPlans(t *testing.T) {
	s := openTestStore(t)
	m := newTestMeter(t, s, MeterOptions{})
	free := &Plan{Name: "free", Credits: &Credits{Amount: 10}}
	pro := &Plan{Name: "pro", Credits: &Credits{Amount: 1000}}
	kr := NewKeyring(s, Options{FlushInterval: time.Hour, Meter: m, Policy: Policy{
		Plans:       map[string]*Plan{"free": free, "pro": pro},
		DefaultPlan: "free",
		ConfigUsers: map[string]UserRules{"alice": {Plan: "pro"}, "bob": {}},
	}})
	defer kr.Close()
	ctx := context.Background()
	alice, _ := kr.Mint(ctx, owner("alice"), KeyRequest{})
	bob, _ := kr.Mint(ctx, owner("bob"), KeyRequest{})
	for _, tc := range []struct {
		name string
		m    Minted
		plan *Plan
	}{
		{"user given a plan", alice, pro},
		{"user on the default plan", bob, free},
	} {
		ok := t.Run(tc.name, func(t *testing.T) {
			k, err := kr.VerifyWithin(ctx, tc.m.Secret, nil, "")
			if err != nil || k.Limits() == nil || k.Limits().Plan != tc.plan {
				t.Fatalf("%s: limits %+v, %v; want plan %s", tc.m.Owner, k.Limits(), err, tc.plan.Name)
			}
		})
		if !ok {
			t.FailNow() // what follows needs the plans
		}
	}
	// Owners cannot give themselves a plan; operators can, per key.
	if _, err := kr.Mint(ctx, owner("bob"), KeyRequest{Plan: "pro"}); err == nil {
		t.Fatal("an owner chose its plan")
	}
	if _, err := kr.SetKeyPlan(ctx, bob.ID, "pro"); err != nil {
		t.Fatal(err)
	}
	if k, _ := kr.VerifyWithin(ctx, bob.Secret, nil, ""); k.Limits().Plan != pro {
		t.Fatal("a key's own plan did not take at once")
	}
	if _, err := kr.SetKeyPlan(ctx, bob.ID, "gold"); !errors.Is(err, ErrUnknownPlan) {
		t.Fatalf("an unknown plan: %v", err)
	}
	// Balances: spend, inspect, set, add.
	k, _ := kr.VerifyWithin(ctx, alice.Secret, nil, "")
	for range 5 {
		if v, _ := k.Limits().Take(ctx, 10); !v.Allowed {
			t.Fatal(v)
		}
	}
	if b, ok, err := kr.BalanceOf(ctx, alice.Key); err != nil || !ok || b.Remaining != 950 {
		t.Fatalf("balance after spending 50: %+v, %v, %v", b, ok, err)
	}
	if b, err := kr.AdjustCredits(ctx, alice.Key, 20, true); err != nil || b.Remaining != 20 {
		t.Fatalf("set to 20: %+v, %v", b, err)
	}
	var spent int64
	for {
		v, _ := k.Limits().Take(ctx, 10)
		if !v.Allowed {
			break
		}
		spent += 10
	}
	if spent != 20 {
		t.Fatalf("spent %d after the balance was set to 20", spent)
	}
	if b, err := kr.AdjustCredits(ctx, alice.Key, 30, false); err != nil || b.Remaining != 30 {
		t.Fatalf("add 30: %+v, %v", b, err)
	}
	// The successor of a rotation spends from the same balance.
	next, _, err := kr.Rotate(ctx, owner("alice"), alice.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, _, _ := kr.BalanceOf(ctx, next.Key); b.Remaining != 30 {
		t.Fatalf("the rotated key's balance: %+v, want the 30 left", b)
	}
}

// downStore fails credit operations while down is set.
type downStore struct {
	Store
	down atomic.Bool
}

var errStoreDown = errors.New("store down")

func (d *downStore) UpdateCredits(ctx context.Context, id string, f func(*CreditAccount, bool) error) (CreditAccount, error) {
	if d.down.Load() {
		return CreditAccount{}, errStoreDown
	}
	return d.Store.UpdateCredits(ctx, id, f)
}

// While the store cannot be reached, the block in hand is still spent,
// then Take fails (the gateway answers 503) rather than admitting on
// credits it cannot reserve; nothing is lost when the store returns.
func TestMeterCreditsWhileTheStoreIsDown(t *testing.T) {
	s := openTestStore(t)
	ds := &downStore{Store: s}
	m := newTestMeter(t, ds, MeterOptions{})
	l := m.limitsFor(meterKey("k"), &Plan{Name: "p", Credits: &Credits{Amount: 80}})
	ctx := context.Background()
	if v, err := l.Take(ctx, 1); err != nil || !v.Allowed { // takes a block of 10
		t.Fatal(v, err)
	} else {
		v.Charge.Commit()
	}
	ds.down.Store(true)
	admitted := int64(1)
	for {
		v, err := l.Take(ctx, 1)
		if err != nil {
			if !errors.Is(err, errStoreDown) {
				t.Fatal(err)
			}
			break
		}
		if !v.Allowed {
			t.Fatalf("refused as spent while the store is down: %+v", v)
		}
		v.Charge.Commit()
		admitted++
	}
	if admitted != 10 {
		t.Fatalf("%d admitted from the block in hand, want 10", admitted)
	}
	ds.down.Store(false)
	if total := admitted + takeAll(t, l, 100, 1); total != 80 {
		t.Fatalf("%d admitted on 80 credits across the outage", total)
	}
}

// Every block of credits taken is told, with what the store has left,
// after the account's lock is let go; owners' accounts say whose they
// are; a cleared hook of an older config leaves a newer one alone.
func TestMeterTellsOfCreditsReserved(t *testing.T) {
	s := openTestStore(t)
	m := newTestMeter(t, s, MeterOptions{})
	var mu sync.Mutex
	var told []CreditsReserved
	f := func(c CreditsReserved) { mu.Lock(); told = append(told, c); mu.Unlock() }
	m.SetOnReserved(&f)
	l := m.limitsFor(meterKey("k"), &Plan{Name: "p", Credits: &Credits{Amount: 80}})
	if got := takeAll(t, l, 25, 1); got != 25 {
		t.Fatalf("%d of 25 admitted", got)
	}
	mu.Lock()
	if len(told) != 3 || told[0].Account != "k" || told[0].Balance != 70 || told[2].Balance != 50 || told[2].Owner != (Owner{}) {
		t.Fatalf("told %+v, want blocks of 10 taken from k down to 50", told)
	}
	told = nil
	mu.Unlock()

	owner := Service("team")
	lo := m.limitsFor(&Key{ID: "k2", Owner: owner, Created: time.Now()}, &Plan{Name: "q", Credits: &Credits{Amount: 16, PerOwner: true}})
	takeAll(t, lo, 1, 1)
	old := func(CreditsReserved) { t.Error("an older config's hook was told") }
	m.ClearOnReserved(&old) // not the one set: nothing changes
	takeAll(t, lo, 3, 1)
	mu.Lock()
	if len(told) != 2 || told[0].Owner != owner || told[0].Account != ownerAccount(owner) {
		t.Fatalf("told %+v, want two blocks of the owner's account", told)
	}
	mu.Unlock()
	m.ClearOnReserved(&f)
	takeAll(t, lo, 10, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 2 {
		t.Fatalf("told after the hook was cleared: %+v", told)
	}
}

// killChildDir is the directory a kill -9 test keeps its store and ledger
// in: the parent's, passed down, when this process is the child.
func killChildDir(t *testing.T) (dir string, child bool) {
	if dir = os.Getenv("APIKEYS_METER_CHILD_DIR"); dir != "" {
		return dir, true
	}
	return t.TempDir(), false
}

// killFixture opens the kill -9 tests' store in dir, with their plan of
// 1000 credits and their key.
func killFixture(t *testing.T, dir string) (*memStore, *Plan, *Key) {
	t.Helper()
	s, err := openFileStore(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	return s, &Plan{Name: "p", Credits: &Credits{Amount: 1000}}, &Key{ID: "killed", Owner: Service("svc"), Created: time.Unix(1_800_000_000, 0)}
}

// A limit lowered by a new plan (a reload) counts what was admitted under
// the old one: the client gets no fresh window on top of what it used.
func TestMeterLoweredLimitKeepsItsCounts(t *testing.T) {
	m := newTestMeter(t, openTestStore(t), MeterOptions{})
	rate := func(limit int64) *Plan {
		return &Plan{Name: "p", Rates: []Rate{{Name: "r", Limit: limit, Window: time.Minute}}}
	}
	if got := takeAll(t, m.limitsFor(meterKey("k"), rate(100)), 80, 0); got != 80 {
		t.Fatalf("%d of 80 admitted under 100", got)
	}
	if got := takeAll(t, m.limitsFor(meterKey("k"), rate(50)), 10, 0); got != 0 {
		t.Fatalf("after 80 under a limit of 100, the limit lowered to 50 admitted %d more", got)
	}
	if got := takeAll(t, m.limitsFor(meterKey("k"), rate(90)), 20, 0); got != 10 {
		t.Fatalf("raised to 90 after 80: %d more admitted, want 10", got)
	}
}
