package keystore

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of MeterOptions.
const (
	defaultIdleReturn = 2 * time.Second
	// exhaustedRecheck is how long an account found out of credits is
	// refused from memory before the store is asked again (an operator
	// may have added some, on this gateway or another).
	exhaustedRecheck = time.Second
)

// MeterOptions tune a Meter.
type MeterOptions struct {
	// Ledger is the file that keeps the credit blocks this process holds
	// across a crash (see ledger); "" keeps them in memory only, so a
	// crash writes them off.
	Ledger string
	// LedgerSlots is how many accounts may hold credits at once with the
	// ledger's protection. Default 65 536.
	LedgerSlots int
	// IdleReturn is how long an account's credit block may go unused
	// before what is left of it goes back to the store, where other
	// gateways can take it. Default 2s.
	IdleReturn time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// OnError, if set, is told of background failures (giving credits
	// back, writing rate share tables), each error saying which.
	OnError func(error)
}

// Meter holds keys to their plans: rate windows counted in memory, and
// credits spent from blocks taken from the store in one transaction each
// and given back when idle. It outlives configuration reloads: the
// counters of a key are the same whichever Keyring checked it.
type Meter struct {
	store   Store
	ledger  *ledger
	now     func() time.Time
	idle    time.Duration
	onError func(error)
	shares  atomic.Pointer[share]
	// follow, once FollowLoad ran, keeps busy limits at the grants of the
	// store's share tables; following counts its goroutines.
	follow    atomic.Pointer[rateShares]
	following sync.WaitGroup
	// onReserved, if set, hears of every block of credits taken.
	onReserved atomic.Pointer[func(CreditsReserved)]

	mu       sync.Mutex
	accounts map[string]*account
	pending  []leftover // blocks of a previous process not given back yet
	retired  []retired  // settled retiring blocks to give back

	stop, done chan struct{}
	closeOnce  sync.Once
}

// share is this process's part of limits shared by several gateways: the
// index-th of count.
type share struct{ index, count int64 }

// account is one set of counters: a key's (and its rotations'), or an
// owner's.
type account struct {
	id      string
	mu      sync.Mutex
	rates   []Rate
	windows []rateWindow
	// tabled[i] says windows[i] follows a share table's grant rather
	// than the equal part of share.
	tabled  []bool
	share   *share
	credits *creditState
	lastUse atomic.Int64
	dead    atomic.Bool // dropped by the meter: resolve again
	// owner is the owner of an owner's account (zero for a key's).
	owner Owner
}

// CreditsReserved describes a credit account right after a gateway took
// a block of credits from it (or found it empty).
type CreditsReserved struct {
	// Account is the account's id: a key's accountID, or an owner's
	// ownerAccount.
	Account string
	// Owner is the owner of an owner's account; zero for a key's.
	Owner Owner
	// Balance is what is left in the store, held by no gateway.
	Balance int64
	// Period is the refill period, and Gen the operator's last setting:
	// together they tell one stretch of the balance from the next.
	Period int64
	Gen    uint64
}

// SetOnReserved sets the function told of every block of credits taken,
// in the request that took it: it must not block. It replaces any other.
func (m *Meter) SetOnReserved(f *func(CreditsReserved)) { m.onReserved.Store(f) }

// ClearOnReserved removes f if it is still the one set (a config being
// replaced leaves its successor's alone).
func (m *Meter) ClearOnReserved(f *func(CreditsReserved)) { m.onReserved.CompareAndSwap(f, nil) }

// Limits are the counters a key spends from, which a Keyring attaches to
// the key it caches.
type Limits struct {
	// Plan is the plan the key follows.
	Plan *Plan
	m    *Meter
	// The accounts; an account the meter forgot while idle is replaced
	// by the live one of its id at the next use.
	key, owner           atomic.Pointer[account]
	keyID, ownerID       string
	keyTerms, ownerTerms *creditTerms
}

// Reason says what a refusal ran out of.
type Reason int

// Reasons of a refusal.
const (
	// RateLimited: a rate window is full.
	RateLimited Reason = iota + 1
	// OutOfCredits: the credits are spent.
	OutOfCredits
)

// Verdict is the outcome of Take, with the most restrictive limit for the
// RateLimit fields.
type Verdict struct {
	// Allowed says whether the request may go on.
	Allowed bool
	// Reason says what ran out, when not allowed.
	Reason Reason
	// Name is the limit the other fields describe: a rate's name, or
	// "credits".
	Name string
	// Quota is that limit's size: requests per window, or the credits
	// of a period.
	Quota int64
	// Window is the rate's window, or the credits' refill period (0 if
	// they never refill).
	Window time.Duration
	// Remaining is what is left of that limit after this request.
	Remaining int64
	// Reset is how long until that limit is whole again (0 for credits
	// that never refill).
	Reset time.Duration
	// RetryAfter, when not allowed, is how long until the request could
	// pass (0 when unknown: credits that never refill).
	RetryAfter time.Duration
	// Credits is the balance left, or -1 without credits.
	Credits int64
	// NextRefill is when the credits refill; zero if never.
	NextRefill time.Time
	// Charge is what an allowed request holds of its credits.
	Charge Charge
}

// NewMeter starts a Meter over store. It gives back what a previous
// process left in the ledger. Call Close to stop it.
func NewMeter(store Store, opts MeterOptions) (*Meter, error) {
	if opts.IdleReturn <= 0 {
		opts.IdleReturn = defaultIdleReturn
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l, left, err := openLedger(opts.Ledger, opts.LedgerSlots)
	if err != nil {
		return nil, err
	}
	m := &Meter{store: store, ledger: l, now: opts.Now, idle: opts.IdleReturn, onError: opts.OnError,
		accounts: make(map[string]*account), pending: left, stop: make(chan struct{}), done: make(chan struct{})}
	m.shares.Store(&share{0, 1})
	m.giveBackLeftovers(context.Background())
	go m.loop()
	return m, nil
}

// SetShare makes this process enforce the index-th of count equal parts
// of every rate limit, for count gateways sharing keys (0 ≤ index <
// count). The parts add up to the limit exactly.
func (m *Meter) SetShare(index, count int) {
	if count < 1 || index < 0 || index >= count {
		index, count = 0, 1
	}
	if s := m.shares.Load(); s.index == int64(index) && s.count == int64(count) {
		return
	}
	m.shares.Store(&share{int64(index), int64(count)})
}

// partOf is this process's part of limit under s.
func partOf(limit int64, s *share) int64 { return PartOf(limit, int(s.index), int(s.count)) }

// PartOf is the part of total that the index-th of count gateways
// enforces when they share a limit: total/count, plus one for the first
// total%count indexes, so that the parts add up to total exactly and
// differ by at most one. When count exceeds total, the indexes from total
// on get 0. An index outside [0, count) is a gateway alone: total.
func PartOf(total int64, index, count int) int64 {
	if count < 1 || index < 0 || index >= count {
		return total
	}
	part := total / int64(count)
	if int64(index) < total%int64(count) {
		part++
	}
	return part
}

// limitsFor returns the counters that k spends from under plan, or nil
// for no plan.
func (m *Meter) limitsFor(k *Key, plan *Plan) *Limits {
	if m == nil || plan == nil {
		return nil
	}
	l := &Limits{Plan: plan, m: m, keyID: k.accountID()}
	if c := plan.Credits; c != nil {
		t := &creditTerms{Amount: c.Amount, Refill: c.Refill, Anchor: k.Created}
		if c.PerOwner {
			t.Anchor = time.Time{} // the first use
			l.ownerTerms = t
		} else {
			l.keyTerms = t
		}
	}
	l.key.Store(m.account(l.keyID, plan.Rates, l.keyTerms))
	if len(plan.OwnerRates) > 0 || l.ownerTerms != nil {
		l.ownerID = ownerAccount(k.Owner)
		a := m.account(l.ownerID, plan.OwnerRates, l.ownerTerms)
		a.mu.Lock()
		a.owner = k.Owner
		a.mu.Unlock()
		l.owner.Store(a)
	}
	return l
}

// accounts returns the live accounts of l.
func (l *Limits) accounts() (key, owner *account) {
	key, owner = l.key.Load(), l.owner.Load()
	if key.dead.Load() {
		key = l.m.account(l.keyID, l.Plan.Rates, l.keyTerms)
		l.key.Store(key)
	}
	if owner != nil && owner.dead.Load() {
		owner = l.m.account(l.ownerID, l.Plan.OwnerRates, l.ownerTerms)
		l.owner.Store(owner)
	}
	return key, owner
}

// account returns the live account id, set up for rates and credits.
func (m *Meter) account(id string, rates []Rate, credits *creditTerms) *account {
	m.mu.Lock()
	a := m.accounts[id]
	if a == nil {
		a = &account{id: id}
		m.accounts[id] = a
	}
	m.mu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Equal(a.rates, rates) {
		oldRates, oldWindows := a.rates, a.windows
		a.rates, a.windows, a.tabled, a.share = slices.Clone(rates), make([]rateWindow, len(rates)), make([]bool, len(rates)), nil
		for i, r := range rates {
			a.windows[i] = newRateWindow(r.Limit, r.Window)
			// A limit of the same name and window keeps its counts, also
			// when its size changed: lowering a limit must not hand the
			// client a fresh window on top of what it used.
			if j := slices.IndexFunc(oldRates, func(o Rate) bool { return o.Name == r.Name && o.Window == r.Window }); j >= 0 {
				a.windows[i] = oldWindows[j]
				a.windows[i].limit = r.Limit // the part is set again at the next Take
			}
			if g, ok := m.grantOf(id, r); ok {
				a.windows[i].limit, a.tabled[i] = g, true
			}
		}
	}
	switch {
	case credits == nil:
		a.credits = nil
	case a.credits == nil:
		a.credits = &creditState{terms: *credits, m: m, slotIndex: -1}
	default:
		a.credits.terms.Amount, a.credits.terms.Refill = credits.Amount, credits.Refill
	}
	a.lastUse.Store(m.now().UnixNano())
	return a
}

// Take charges one request of cost credits against the limits: it counts
// the request in every rate window and holds its credits (Verdict.Charge:
// commit or cancel it), or refuses it and charges nothing. It blocks only
// to take a new block of credits from the store. An error is a store
// fault.
func (l *Limits) Take(ctx context.Context, cost int64) (Verdict, error) {
	if l == nil {
		return Verdict{Allowed: true, Credits: -1}, nil
	}
	for {
		v, reserve := l.try(cost)
		if reserve == nil {
			return v, nil
		}
		if err := l.m.reserve(ctx, reserve, cost); err != nil {
			return Verdict{}, err
		}
	}
}

// try decides with the counters as they are, holding the credits of an
// admitted request. It returns the account whose
// credits need a new block first, if any.
func (l *Limits) try(cost int64) (Verdict, *account) {
	m := l.m
	now := m.now()
	ns := now.UnixNano()
	key, owner := l.accounts()
	key.mu.Lock()
	defer key.mu.Unlock()
	if owner != nil {
		owner.mu.Lock()
		defer owner.mu.Unlock()
	}
	s := m.shares.Load()
	v := Verdict{Allowed: true, Credits: -1, Remaining: -1}
	for _, a := range [2]*account{key, owner} {
		if a == nil {
			continue
		}
		a.lastUse.Store(ns)
		if a.share != s {
			for i, r := range a.rates {
				if !a.tabled[i] {
					a.windows[i].limit = partOf(r.Limit, s)
				}
			}
			a.share = s
		}
		for i := range a.windows {
			w := &a.windows[i]
			w.advance(ns)
			if !w.allows(1) {
				m.wantMore(a, i)
				return Verdict{Reason: RateLimited, Name: a.rates[i].Name, Quota: w.limit, Window: a.rates[i].Window,
					Reset: w.resetIn(ns), RetryAfter: w.wait(ns, 1), Credits: -1}, nil
			}
		}
	}
	credits := key
	if owner != nil && owner.credits != nil {
		credits = owner
	}
	if cs := credits.credits; cs != nil {
		ok, need := cs.hold(cost, now)
		switch {
		case need:
			return Verdict{}, credits
		case !ok:
			v := cs.verdict(now)
			v.Allowed, v.Reason, v.RetryAfter = false, OutOfCredits, max(v.Reset, 0)
			return v, nil
		}
		v = cs.verdict(now)
		v.Allowed = true
		if cost > 0 { // free: nothing held
			v.Charge = Charge{a: credits, slot: cs.slot, cost: cost}
		}
	}
	// The most restrictive limit is the one with the fewest requests left.
	left := v.Remaining
	if v.Credits >= 0 && cost > 0 {
		left = v.Credits / cost
	}
	for _, a := range [2]*account{key, owner} {
		if a == nil {
			continue
		}
		for i := range a.windows {
			w := &a.windows[i]
			w.add(1)
			if rem := w.remaining(); left < 0 || rem < left {
				left = rem
				v.Name, v.Quota, v.Window, v.Remaining, v.Reset = a.rates[i].Name, w.limit, a.rates[i].Window, rem, w.resetIn(ns)
			}
		}
	}
	return v, nil
}

// Close stops the Meter: what is left of the credit blocks goes back to
// the store, and the ledger is closed.
func (m *Meter) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
		m.following.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.giveBackIdle(ctx, time.Time{})
		err = m.ledger.close()
	})
	return err
}

// loop gives back idle credits and forgets idle accounts.
func (m *Meter) loop() {
	defer close(m.done)
	t := time.NewTicker(max(m.idle/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		now := m.now()
		m.giveBackIdle(context.Background(), now.Add(-m.idle))
		m.giveBackLeftovers(context.Background())
		m.forget(now)
	}
}

// forget drops accounts unused for longer than their longest window that
// hold no credits, so that the map does not grow with every key ever used.
func (m *Meter) forget(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, a := range m.accounts {
		a.mu.Lock()
		longest := time.Minute
		for _, r := range a.rates {
			longest = max(longest, r.Window+r.Window/windowSlots)
		}
		idle := now.Sub(time.Unix(0, a.lastUse.Load()))
		if idle > longest && (a.credits == nil || a.credits.slot == nil && a.credits.reserving == nil && len(a.credits.retiring) == 0) {
			a.dead.Store(true)
			delete(m.accounts, id)
		}
		a.mu.Unlock()
	}
}
