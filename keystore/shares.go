package keystore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate shares: how gateways sharing a store divide the rate limits that
// one of them runs short of, so that the limit follows the load.
//
// A limit nobody ran short of has no table: each of n gateways enforces
// its equal part (PartOf), which costs nothing. The first gateway refused
// for its part writes the limit's ShareTable, granting every live gateway
// exactly its equal part (so nothing changes at that moment) and marking
// itself wanting. From then on every gateway enforces what the table
// grants it, and each changes only its own entry, by compare-and-swap:
//
//   - one that wants more takes what no entry holds, unless another
//     wanting gateway holds less than its equal part of the wanting
//     gateways'; then it takes only up to its own part, and one holding
//     more gives back down to it as its window lets it;
//   - one that has not been refused for a while (shareHoldFor) gives
//     back, whenever another wants, all that its window does not count
//     now, so its grant follows its count down as the window's slots
//     expire;
//   - one whose window has counted nothing for a whole window gives
//     back all it holds; a table that grants nothing and that nobody
//     wants is deleted, and the equal parts apply again;
//   - the entry of a gateway that left (its membership lapsed) is
//     removed a window after that was seen, when nothing it admitted
//     can count any more.
//
// A gateway lowers what it enforces before it writes a smaller grant,
// and raises it only after a larger one was written; no window counts
// more than its grant. So at every moment the grants enforced add up to
// at most the limit, and no interval of the window's length admits more
// than the limit across the gateways, while the membership is steady.
// Requests never wait for the store: one refused for lack of grant
// makes its gateway ask in the background.

const (
	// A gateway refused for its grant wants more for a tenth of the
	// window, at least shareBusyFor, and keeps what it holds for a third
	// of it, at least shareHoldFor, before it gives back what its window
	// does not count: a load above the limit is refused in bursts (a
	// window admits what the same slots admitted a window before), and
	// gateways that all carry such a load should keep their parts
	// between bursts rather than trade units at every one. A load that
	// moved away loses nothing by the wait: what it was admitted counts
	// for a whole window anyway.
	shareBusyFor = 300 * time.Millisecond
	shareHoldFor = time.Second
	// shareTick is how often every table is looked at again, so that
	// grants follow the windows' counts down.
	shareTick = 100 * time.Millisecond
	// shareLoadWait bounds how long FollowLoad waits for the tables.
	shareLoadWait = 5 * time.Second
	// shareWriteTimeout bounds one table write, on top of the store's
	// own bound.
	shareWriteTimeout = 10 * time.Second
	// A gateway writes share tables at most shareWriteRate times a second
	// (bursts of shareWriteBurst), whatever the number of busy limits, so
	// that clients running many keys over their limits cannot make it
	// load the store: a busy limit takes a few writes a second, and a
	// write left out is safe (a grant not raised, a grant given back
	// later, a limit left divided equally). New tables are made only from
	// the upper half of the burst, so that the tables already made keep
	// following their load.
	shareWriteRate  = 100
	shareWriteBurst = 200
)

// shareDemand is a refusal for lack of grant.
type shareDemand struct {
	account string
	rate    Rate
}

// shareState is what this gateway knows and holds of one limit's table.
type shareState struct {
	account string
	rate    Rate
	table   *ShareTable // nil: none in the store
	rev     int64
	// granted is what this gateway enforces under the table (at most
	// its entry's grant).
	granted int64
	// refused is when this gateway last refused a request of the limit
	// for lack of grant.
	refused time.Time
}

// busy reports whether st's gateway wants more at now, and whether it
// keeps what it holds.
func (st *shareState) busy(now time.Time) (wants, holds bool) {
	since, w := now.Sub(st.refused), st.rate.Window
	return since < max(w/10, shareBusyFor), since < max(w/3, shareHoldFor)
}

// pendingShare is a change heard from the store, not applied yet.
type pendingShare struct {
	table *ShareTable
	rev   int64
}

// rateShares keeps a Meter's rate windows at the grants of the store's
// share tables. One goroutine (run) makes every decision and write, so
// that a write and the grant it changes are never interleaved with
// another.
type rateShares struct {
	m       *Meter
	store   ShareTables
	onError func(error)
	writes  *rate.Limiter // shareWriteRate
	demands chan shareDemand
	wake    chan struct{}
	loaded  chan struct{} // closed at the first SharesLoaded
	once    sync.Once

	mu      sync.Mutex
	members Members
	states  map[string]*shareState
	full    map[string]VersionedShareTable // a full load not applied yet
	fullRev int64
	changes map[string]pendingShare
	absent  map[string]time.Time // members in tables but not live, since when
}

// FollowLoad makes this process's parts of rate limits follow the load
// (rate shares, above) through the share tables in store, instead of
// staying equal; SetMembers must report the membership. It waits until
// the tables that exist are known, at most a few seconds (a gateway
// that starts meanwhile enforces equal parts until then), and keeps them
// current until Close. Call it at most once, before requests and
// SetMembers.
func (m *Meter) FollowLoad(ctx context.Context, store ShareTables) {
	rs := &rateShares{m: m, store: store, onError: m.onError, writes: rate.NewLimiter(shareWriteRate, shareWriteBurst),
		demands: make(chan shareDemand, 1024), wake: make(chan struct{}, 1), loaded: make(chan struct{}),
		states: make(map[string]*shareState), changes: make(map[string]pendingShare), absent: make(map[string]time.Time)}
	if rs.onError == nil {
		rs.onError = func(error) {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.follow.Store(rs)
	m.following.Add(2)
	go func() {
		defer m.following.Done()
		store.FollowShareTables(ctx, rs)
	}()
	go func() {
		defer m.following.Done()
		defer cancel()
		rs.run(ctx, m.stop)
	}()
	select {
	case <-rs.loaded:
	case <-time.After(shareLoadWait):
	case <-ctx.Done():
	}
}

// FollowsLoad reports whether FollowLoad ran.
func (m *Meter) FollowsLoad() bool { return m.follow.Load() != nil }

// SetMembers makes this process enforce its part of every rate limit
// among the gateways sharing its store: the equal part of SetShare, or,
// with FollowLoad, what the share tables grant it.
func (m *Meter) SetMembers(ms Members) {
	m.SetShare(ms.Index(), ms.Count())
	if rs := m.follow.Load(); rs != nil {
		rs.setMembers(ms)
	}
}

// wantMore tells the shares that a's rate i refused a request; it never
// blocks. Called with a.mu held.
func (m *Meter) wantMore(a *account, i int) {
	rs := m.follow.Load()
	if rs == nil {
		return
	}
	select {
	case rs.demands <- shareDemand{account: a.id, rate: a.rates[i]}:
	default: // asked already; the next refusal asks again
	}
}

// grantOf returns what this gateway enforces under the table of
// account's rate r, and whether there is one. Called with the account's
// mu held.
func (m *Meter) grantOf(account string, r Rate) (int64, bool) {
	rs := m.follow.Load()
	if rs == nil {
		return 0, false
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	st := rs.states[ShareTableID(account, r)]
	if st == nil || st.table == nil {
		return 0, false
	}
	return st.granted, true
}

// SharesLoaded implements ShareFollower.
func (rs *rateShares) SharesLoaded(tables map[string]VersionedShareTable, rev int64) {
	rs.mu.Lock()
	rs.full, rs.fullRev, rs.changes = tables, rev, make(map[string]pendingShare)
	rs.mu.Unlock()
	rs.poke()
	rs.once.Do(func() { close(rs.loaded) })
}

// ShareChanged implements ShareFollower.
func (rs *rateShares) ShareChanged(id string, t *ShareTable, rev int64) {
	rs.mu.Lock()
	rs.changes[id] = pendingShare{t, rev}
	rs.mu.Unlock()
	rs.poke()
}

func (rs *rateShares) poke() {
	select {
	case rs.wake <- struct{}{}:
	default:
	}
}

func (rs *rateShares) setMembers(ms Members) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := rs.m.now()
	for _, id := range rs.members.IDs {
		if !ms.live(id) {
			if _, ok := rs.absent[id]; !ok {
				rs.absent[id] = now
			}
		}
	}
	for id := range rs.absent {
		if ms.live(id) {
			delete(rs.absent, id)
		}
	}
	rs.members = Members{Self: ms.Self, IDs: slices.Clone(ms.IDs), Fixed: slices.Clone(ms.Fixed)}
}

// run makes the decisions: on every refusal for lack of grant, every
// change heard, and every shareTick for all tables.
func (rs *rateShares) run(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(shareTick)
	defer t.Stop()
	for {
		due := make(map[string]bool)
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case d := <-rs.demands:
			rs.busy(d, due)
			for more := true; more; {
				select {
				case d := <-rs.demands:
					rs.busy(d, due)
				default:
					more = false
				}
			}
		case <-rs.wake:
		case <-t.C:
			rs.mu.Lock()
			for id := range rs.states {
				due[id] = true
			}
			rs.mu.Unlock()
		}
		rs.apply(due)
		for id := range due {
			rs.evaluate(ctx, id)
		}
	}
}

// busy marks d's limit as wanting more.
func (rs *rateShares) busy(d shareDemand, due map[string]bool) {
	id := ShareTableID(d.account, d.rate)
	rs.mu.Lock()
	st := rs.states[id]
	if st == nil {
		st = &shareState{account: d.account, rate: d.rate}
		rs.states[id] = st
	}
	st.refused = rs.m.now()
	rs.mu.Unlock()
	due[id] = true
}

// apply takes in the changes heard from the store, newest revision
// winning, and lowers the grants enforced to what the tables now say.
func (rs *rateShares) apply(due map[string]bool) {
	rs.mu.Lock()
	changes := rs.changes
	rs.changes = make(map[string]pendingShare)
	if rs.full != nil {
		for id, st := range rs.states {
			if _, ok := rs.full[id]; !ok && st.table != nil && st.rev < rs.fullRev {
				changes[id] = pendingShare{nil, rs.fullRev}
			}
		}
		for id, v := range rs.full {
			if c, ok := changes[id]; !ok || c.rev < v.Rev {
				changes[id] = pendingShare{&v.Table, v.Rev}
			}
		}
		rs.full = nil
	}
	type update struct {
		st     *shareState
		grant  int64
		tabled bool
	}
	var updates []update
	for id, c := range changes {
		if c.table != nil && ShareTableID(c.table.Account, c.table.Rate) != id {
			continue // not a table a gateway wrote: its limit is not its id's
		}
		st := rs.states[id]
		if st == nil {
			if c.table == nil {
				continue
			}
			st = &shareState{account: c.table.Account, rate: c.table.Rate}
			rs.states[id] = st
		}
		if c.rev <= st.rev {
			continue // our own write, or older
		}
		wasTabled := st.table != nil
		st.table, st.rev = c.table, c.rev
		due[id] = true
		if c.table == nil {
			st.granted = 0
			updates = append(updates, update{st: st})
			continue
		}
		e, _ := c.table.entry(rs.members.Self)
		if wasTabled {
			st.granted = min(st.granted, e.Grant)
		} else {
			st.granted = min(e.Grant, rs.members.part(st.rate.Limit))
		}
		updates = append(updates, update{st, st.granted, true})
	}
	rs.mu.Unlock()
	for _, u := range updates {
		rs.setLocal(u.st, u.grant, u.tabled)
	}
}

// evaluate decides this gateway's entry in the table of id, and writes
// it if it changed.
func (rs *rateShares) evaluate(ctx context.Context, id string) {
	now := rs.m.now()
	rs.mu.Lock()
	st := rs.states[id]
	ms := rs.members
	if st == nil || ms.Index() < 0 {
		rs.mu.Unlock()
		return
	}
	t, rev, g := st.table, st.rev, st.granted
	busy, holds := st.busy(now)
	limit := st.rate.Limit
	if t == nil {
		if !busy {
			delete(rs.states, id)
		}
		rs.mu.Unlock()
		if busy && ms.Count() > 1 {
			next := &ShareTable{Account: st.account, Rate: st.rate}
			for i, m := range ms.IDs {
				next.Entries = append(next.Entries, ShareEntry{Member: m, Grant: PartOf(limit, i, ms.Count()), Wants: m == ms.Self})
			}
			if rs.mayWrite(true) && rs.write(ctx, id, st, 0, next) {
				rs.raise(st, ms.part(limit))
			}
		}
		return
	}
	// The others' entries, without those of gateways gone a window ago,
	// and the wanting gateways (this one too, if busy), in member order.
	var kept, wanting []ShareEntry
	var others int64
	removed, anyWants := false, false
	mine, _ := t.entry(ms.Self)
	for _, e := range t.Entries {
		if e.Member == ms.Self {
			if busy {
				wanting = append(wanting, e)
			}
			continue
		}
		if rs.goneAWindow(e.Member, st.rate, now, ms) {
			removed = true
			continue
		}
		kept = append(kept, e)
		if ms.fixed(e.Member) {
			continue // holds its equal part, whatever its entry says
		}
		others += e.Grant
		anyWants = anyWants || e.Wants
		if e.Wants && ms.live(e.Member) {
			wanting = append(wanting, e)
		}
	}
	if busy && mine.Member == "" { // no entry yet
		mine.Member = ms.Self
		i, _ := entryIndex(wanting, ms.Self)
		wanting = slices.Insert(wanting, i, mine)
	}
	rs.mu.Unlock()
	// Wanting gateways are owed an equal part of the limit each; one
	// holding less is starved, and those holding more give back to it.
	fair, starved := int64(0), false
	for i, e := range wanting {
		part := PartOf(limit, i, len(wanting))
		if e.Member == ms.Self {
			fair = part
		} else if e.Grant < part {
			starved = true
		}
	}
	count := rs.count(st)
	fixed := ms.fixedParts(limit)
	free := max(limit-others-fixed-mine.Grant, 0)
	var target int64
	switch {
	case busy && !starved:
		target = mine.Grant + free
	case busy && mine.Grant < fair:
		target = min(mine.Grant+free, fair)
	case busy:
		target = max(count, fair)
	case len(wanting) > 0 && !holds || count == 0:
		target = count
	default:
		target = g
	}
	// Never more than the others leave (the fixed gateways' parts
	// included, which grow when one joins), even for a window that
	// counts more (the membership changed under it): it then admits
	// nothing until it counts less.
	most := max(limit-others-fixed, 0)
	target = min(target, most)
	idle := !busy && target == 0 && others == 0 && !anyWants
	if idle || target < g {
		// What the window counted since count was read stays granted.
		target = rs.lower(st, target, most)
	}
	if idle && target == 0 {
		if rs.mayWrite(false) {
			rs.write(ctx, id, st, rev, nil) // nobody holds or wants any: equal parts again
		}
		return
	}
	if target == mine.Grant && busy == mine.Wants && !removed && target == g {
		return
	}
	next := &ShareTable{Account: t.Account, Rate: t.Rate, Entries: kept}
	next = next.with(ShareEntry{Member: ms.Self, Grant: target, Wants: busy})
	if rs.mayWrite(false) && rs.write(ctx, id, st, rev, next) && target > g {
		rs.raise(st, target)
	}
}

// goneAWindow reports whether member has been out of the membership for
// longer than a window of r (plus a slot), so that nothing it admitted
// still counts. Called with rs.mu held.
func (rs *rateShares) goneAWindow(member string, r Rate, now time.Time, ms Members) bool {
	if ms.live(member) {
		return false
	}
	since, ok := rs.absent[member]
	if !ok {
		rs.absent[member] = now
		return false
	}
	return now.Sub(since) > r.Window+r.Window/windowSlots
}

// mayWrite takes a write from the budget, if there is one: for a new
// table, only from the upper half of the burst.
func (rs *rateShares) mayWrite(create bool) bool {
	if create && rs.writes.Tokens() < shareWriteBurst/2 {
		return false
	}
	return rs.writes.Allow()
}

// write swaps the table of id at rev for next, and reports whether it
// was written; a table changed meanwhile comes back through the store.
func (rs *rateShares) write(ctx context.Context, id string, st *shareState, rev int64, next *ShareTable) bool {
	ctx, cancel := context.WithTimeout(ctx, shareWriteTimeout)
	defer cancel()
	newRev, ok, err := rs.store.SwapShareTable(ctx, id, rev, next)
	if err != nil {
		rs.onError(fmt.Errorf("writing the rate share table %s: %w", id, err))
		return false
	}
	if !ok {
		return false
	}
	rs.mu.Lock()
	if newRev > st.rev {
		st.table, st.rev = next, newRev
	}
	if next == nil {
		st.granted = 0
		if busy, _ := st.busy(rs.m.now()); !busy {
			delete(rs.states, id)
		}
	}
	rs.mu.Unlock()
	if next == nil {
		rs.setLocal(st, 0, false)
	}
	return true
}

// lower makes this gateway enforce at most target of st's limit, or
// what its window counts if more, but never more than most, and returns
// that.
func (rs *rateShares) lower(st *shareState, target, most int64) int64 {
	rs.mu.Lock()
	st.granted = min(st.granted, target) // accounts made from now on start here
	rs.mu.Unlock()
	got := target
	rs.withWindow(st, func(w *rateWindow, tabled *bool) {
		w.advance(rs.m.now().UnixNano())
		got = min(max(target, w.sum), most)
		w.limit, *tabled = got, true
	})
	rs.mu.Lock()
	st.granted = got
	rs.mu.Unlock()
	return got
}

// raise makes this gateway enforce grant, once it is written.
func (rs *rateShares) raise(st *shareState, grant int64) {
	rs.mu.Lock()
	st.granted = grant
	rs.mu.Unlock()
	rs.setLocal(st, grant, true)
}

// setLocal sets the window of st's limit to grant, or, untabled, to the
// equal part again.
func (rs *rateShares) setLocal(st *shareState, grant int64, tabled bool) {
	rs.withWindow(st, func(w *rateWindow, t *bool) {
		if *t = tabled; tabled {
			w.limit = grant
		} else {
			w.limit = partOf(st.rate.Limit, rs.m.shares.Load())
		}
	})
}

// count is what the window of st's limit counts now (0 without it).
func (rs *rateShares) count(st *shareState) int64 {
	var n int64
	rs.withWindow(st, func(w *rateWindow, _ *bool) {
		w.advance(rs.m.now().UnixNano())
		n = w.sum
	})
	return n
}

// withWindow calls fn with the window of st's limit in its account,
// locked, if the meter has it.
func (rs *rateShares) withWindow(st *shareState, fn func(w *rateWindow, tabled *bool)) {
	m := rs.m
	m.mu.Lock()
	a := m.accounts[st.account]
	m.mu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if i := slices.Index(a.rates, st.rate); i >= 0 {
		fn(&a.windows[i], &a.tabled[i])
	}
}
