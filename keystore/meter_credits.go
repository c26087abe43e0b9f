package keystore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// creditState is an account's credits as this process holds them: the
// block it took last (its counters live in a ledger slot) and what the
// store said then.
type creditState struct {
	terms     creditTerms
	m         *Meter
	slot      *ledgerSlot // the held block; nil when none
	slotIndex int
	// held is what requests in flight hold of the block: taken from it
	// but not yet written to the ledger as spent, so that a crash gives
	// it back (those requests were never answered).
	held int64
	// retiring are blocks let go of while requests held part of them:
	// their slots keep what those requests hold until they settle.
	retiring []*retiringBlock
	anchor   time.Time // of the account's periods
	balance  int64     // the store's balance after the last operation
	known    bool      // balance and anchor come from the store
	// exhausted is when the store last had no block to give (Unix ns),
	// in period exhaustedIn; until exhaustedRecheck later, or the next
	// period, requests are refused from memory.
	exhausted   int64
	exhaustedIn int64
	reserving   chan struct{} // closed when the reservation in flight ends
}

// period is the refill period at now.
func (cs *creditState) period(now time.Time) int64 {
	if cs.terms.Refill <= 0 || now.Before(cs.anchor) {
		return 0
	}
	return int64(now.Sub(cs.anchor) / cs.terms.Refill)
}

// hold takes cost from the held block for a request in flight (see
// Charge). need says that a new block is needed first; !ok && !need means
// the credits are spent.
func (cs *creditState) hold(cost int64, now time.Time) (ok, need bool) {
	if cost <= 0 {
		return true, false
	}
	if s := cs.slot; s != nil {
		if s.period != cs.period(now) && cs.terms.Refill > 0 {
			// A new period replaced the balance: the block is void.
			cs.drop()
		} else if s.reserved-s.spent-cs.held >= cost {
			cs.held += cost
			return true, false
		}
	}
	if cs.exhausted != 0 && now.UnixNano()-cs.exhausted < int64(exhaustedRecheck) && cs.period(now) == cs.exhaustedIn &&
		cost > cs.balance {
		return false, false
	}
	return false, true
}

// retiringBlock is a block let go of while requests in flight held part
// of it: its slot now covers only what they hold.
type retiringBlock struct {
	slot  *ledgerSlot
	index int
	held  int64
}

// drop lets go of the held blocks without giving anything back: they are
// void.
func (cs *creditState) drop() {
	if cs.slot != nil {
		cs.m.ledger.release(cs.slot, cs.slotIndex)
		cs.slot, cs.held = nil, 0
	}
	for _, r := range cs.retiring {
		cs.m.ledger.release(r.slot, r.index)
	}
	cs.retiring = nil
}

// detached is a block let go of, to give back what is left of it.
type detached struct {
	slot   *ledgerSlot
	index  int
	block  uint64
	gen    uint64
	period int64
	left   int64 // what no request holds: to give back
	kept   bool  // the slot stays, retiring, for requests in flight
}

// detach lets go of the held block. What requests in flight hold of it
// stays in its slot (under a new block id, since what is left goes back
// under the old one), so that a crash before they settle gives it back
// too; the slot is released when they have.
func (cs *creditState) detach() detached {
	s := cs.slot
	d := detached{slot: s, index: cs.slotIndex, block: s.block, gen: s.gen, period: s.period,
		left: s.reserved - s.spent - cs.held}
	if cs.held > 0 {
		s.reserved, s.block = s.spent+cs.held, newBlockID()
		cs.retiring = append(cs.retiring, &retiringBlock{slot: s, index: d.index, held: cs.held})
		d.kept = true
	} else {
		s.state = slotReturning
	}
	cs.slot, cs.held = nil, 0
	return d
}

// reattach undoes a detach whose giving back failed: the block is held
// again, as it was.
func (cs *creditState) reattach(d detached) {
	s := d.slot
	held := int64(0)
	if d.kept {
		for i, r := range cs.retiring {
			if r.slot == s {
				held = r.held
				cs.retiring = append(cs.retiring[:i], cs.retiring[i+1:]...)
				break
			}
		}
		s.reserved += d.left
		s.block = d.block
	}
	s.state = slotHeld
	if cs.slot != nil {
		cs.m.ledger.release(s, d.index) // cannot happen: reserve is the only detacher then
		return
	}
	cs.slot, cs.slotIndex, cs.held = s, d.index, held
}

// unspent is what is left of the held block.
func (cs *creditState) unspent() int64 {
	if cs.slot == nil {
		return 0
	}
	return cs.slot.reserved - cs.slot.spent - cs.held
}

// Charge is what a request admitted by Take holds of its credits. Commit
// it when the response starts (the request is then spent, also across a
// crash), or Cancel it when the request fails before answering (the
// credits are available again). Until then a crash gives them back.
type Charge struct {
	a    *account
	slot *ledgerSlot
	cost int64
}

// Commit spends what the request holds.
func (c Charge) Commit() { c.settle(true) }

// Cancel gives back what the request holds.
func (c Charge) Cancel() { c.settle(false) }

func (c Charge) settle(spent bool) {
	if c.a == nil || c.cost <= 0 {
		return
	}
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	cs := c.a.credits
	if cs == nil {
		return
	}
	if cs.slot == c.slot {
		cs.held -= c.cost
		if spent {
			c.slot.spent += c.cost
		}
		return
	}
	for i, r := range cs.retiring {
		if r.slot != c.slot {
			continue
		}
		r.held -= c.cost
		if spent {
			r.slot.spent += c.cost
		}
		if r.held == 0 { // the last request in flight: give back the rest
			cs.retiring = append(cs.retiring[:i], cs.retiring[i+1:]...)
			r.slot.state = slotReturning
			cs.m.queueReturn(c.a.id, r)
		}
		return
	}
	// The block was voided meanwhile: nothing to settle.
}

// verdict describes the credits after a spend, for answers and fields.
func (cs *creditState) verdict(now time.Time) Verdict {
	v := Verdict{Name: "credits", Quota: cs.terms.Amount, Window: cs.terms.Refill, Credits: cs.balance + cs.unspent()}
	if !cs.known {
		v.Credits = cs.terms.Amount
	}
	v.Remaining = v.Credits
	if cs.terms.Refill > 0 && cs.known {
		v.NextRefill = cs.anchor.Add(time.Duration(cs.period(now)+1) * cs.terms.Refill)
		v.Reset = v.NextRefill.Sub(now)
	}
	return v
}

// reserve takes a new block for a's credits from the store, giving back
// in the same transaction what is left of the one held. Concurrent
// callers for one account share one reservation.
func (m *Meter) reserve(ctx context.Context, a *account, cost int64) error {
	a.mu.Lock()
	cs := a.credits
	if cs == nil {
		a.mu.Unlock()
		return nil
	}
	if ch := cs.reserving; ch != nil {
		a.mu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	done := make(chan struct{})
	cs.reserving = done
	// What is left of the held block goes back: no request may spend it
	// any more, and a crash from here on writes it off.
	var back *detached
	if cs.slot != nil {
		d := cs.detach()
		back = &d
	}
	terms := cs.terms
	a.mu.Unlock()

	now := m.now()
	block := newBlockID()
	slot, index := m.ledger.take(a.id, block)
	var grant CreditOp
	maxBlock := max(cost, terms.Amount/8)
	acct, err := m.store.UpdateCredits(ctx, a.id, func(acct *CreditAccount, exists bool) error {
		if back != nil && back.left > 0 {
			err := giveBack(back.block, back.left, back.gen, back.period)(acct, exists)
			if err != nil && !errors.Is(err, errCreditsVoid) {
				return err
			}
		}
		return reserve(terms, cost, maxBlock, block, now, &grant)(acct, exists)
	})

	var reserved *CreditsReserved // told after a's lock is let go
	defer func() {
		if f := m.onReserved.Load(); f != nil && reserved != nil {
			(*f)(*reserved)
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	defer close(done)
	cs.reserving = nil
	if err != nil {
		m.ledger.release(slot, index)
		if back != nil { // not given back: it stays held, usable again
			cs.reattach(*back)
		}
		return err
	}
	if back != nil && !back.kept {
		m.ledger.release(back.slot, back.index)
	}
	cs.anchor, cs.balance, cs.known = acct.Anchor, acct.Balance, true
	reserved = &CreditsReserved{Account: a.id, Owner: a.owner, Balance: acct.Balance, Period: acct.Period, Gen: acct.Gen}
	if grant.Amount <= 0 {
		m.ledger.release(slot, index)
		cs.exhausted, cs.exhaustedIn = now.UnixNano(), cs.period(now)
		return nil
	}
	slot.gen, slot.period, slot.reserved, slot.spent = acct.Gen, acct.Period, grant.Amount, 0
	slot.state = slotHeld
	cs.slot, cs.slotIndex, cs.exhausted = slot, index, 0
	return nil
}

// giveBackIdle returns what is left of the blocks of accounts unused since
// before (all blocks for a zero before), so that other gateways can take
// them.
func (m *Meter) giveBackIdle(ctx context.Context, before time.Time) {
	m.mu.Lock()
	var idle []*account
	for _, a := range m.accounts {
		if before.IsZero() || a.lastUse.Load() < before.UnixNano() {
			idle = append(idle, a)
		}
	}
	m.mu.Unlock()
	for _, a := range idle {
		a.mu.Lock()
		cs := a.credits
		// Requests still in flight keep what they hold (detach leaves it
		// retiring); the rest goes back.
		if cs == nil || cs.slot == nil || cs.reserving != nil {
			a.mu.Unlock()
			continue
		}
		d := cs.detach()
		a.mu.Unlock()
		err := m.giveBack(ctx, a.id, d.block, d.left, d.gen, d.period)
		if !d.kept {
			m.ledger.release(d.slot, d.index)
		}
		if err != nil && m.onError != nil {
			m.onError(fmt.Errorf("giving credits back: %w", err))
		}
	}
	m.giveBackRetired(ctx)
}

// giveBack returns left of a block to the account id.
func (m *Meter) giveBack(ctx context.Context, id string, block uint64, left int64, gen uint64, period int64) error {
	if left <= 0 {
		return nil
	}
	_, err := m.store.UpdateCredits(ctx, id, giveBack(block, left, gen, period))
	if errors.Is(err, errCreditsVoid) {
		return nil
	}
	return err
}

// retired is a retiring block whose requests have all settled, to give
// back what they did not spend.
type retired struct {
	account string
	*retiringBlock
}

// queueReturn hands a settled retiring block to the background loop.
func (m *Meter) queueReturn(account string, r *retiringBlock) {
	m.mu.Lock()
	m.retired = append(m.retired, retired{account, r})
	m.mu.Unlock()
}

// giveBackRetired gives back what is left of settled retiring blocks and
// frees their slots; blocks that cannot be given back now are tried again.
func (m *Meter) giveBackRetired(ctx context.Context) {
	m.mu.Lock()
	list := m.retired
	m.retired = nil
	m.mu.Unlock()
	var retry []retired
	for _, r := range list {
		s := r.slot
		if err := m.giveBack(ctx, r.account, s.block, s.reserved-s.spent, s.gen, s.period); err != nil {
			retry = append(retry, r)
			if m.onError != nil {
				m.onError(fmt.Errorf("giving credits back: %w", err))
			}
			continue
		}
		m.ledger.release(s, r.index)
	}
	if len(retry) > 0 {
		m.mu.Lock()
		m.retired = append(m.retired, retry...)
		m.mu.Unlock()
	}
}

// giveBackLeftovers returns what a previous process left unspent in the
// ledger, when the ledger can be trusted (same boot), and writes off the
// rest. Blocks that cannot be given back now are tried again later.
func (m *Meter) giveBackLeftovers(ctx context.Context) {
	m.mu.Lock()
	left := m.pending
	m.pending = nil
	m.mu.Unlock()
	var retry []leftover
	for _, l := range left {
		s := &m.ledger.slots[l.slot]
		back := giveBack(l.block, l.unspent, l.gen, l.period)
		if l.reserving {
			back = giveBackReserved(l.block)
		}
		if l.trusted && (l.unspent > 0 || l.reserving) {
			_, err := m.store.UpdateCredits(ctx, l.account, back)
			if err != nil && !errors.Is(err, errCreditsVoid) {
				retry = append(retry, l)
				if m.onError != nil {
					m.onError(fmt.Errorf("giving credits back: %w", err))
				}
				continue
			}
		}
		m.ledger.release(s, l.slot)
	}
	if len(retry) > 0 {
		m.mu.Lock()
		m.pending = append(m.pending, retry...)
		m.mu.Unlock()
	}
}

// storedBalance is the store's view of the balance of account id at now,
// and when it next refills.
func (kr *Keyring) storedBalance(ctx context.Context, id string, terms creditTerms, now time.Time) (CreditAccount, int64, time.Time, error) {
	acct, err := observe(kr, "credit_account", func() (CreditAccount, error) { return kr.store.CreditAccount(ctx, id) })
	switch {
	case errors.Is(err, ErrNotFound):
		// Not used yet: a key's own periods start at its creation, an
		// owner's at its first use.
		var next time.Time
		if !terms.Anchor.IsZero() && !terms.Anchor.After(now) {
			var a CreditAccount
			a.openOrRefill(false, terms, now)
			next = a.nextRefill(terms, now)
		}
		return CreditAccount{}, terms.Amount, next, nil
	case err != nil:
		return CreditAccount{}, 0, time.Time{}, err
	}
	remaining := acct.Balance
	if acct.periodAt(terms, now) > acct.Period {
		remaining = terms.Amount
	}
	return acct, remaining, acct.nextRefill(terms, now), nil
}

// unspentOf is what this process holds unspent of the current block of
// account id, if it belongs to acct's generation and period at now.
func (m *Meter) unspentOf(id string, acct CreditAccount, terms creditTerms, now time.Time) int64 {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	a := m.accounts[id]
	m.mu.Unlock()
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cs := a.credits; cs != nil && cs.slot != nil && cs.slot.gen == acct.Gen && cs.slot.period == acct.periodAt(terms, now) {
		return cs.unspent()
	}
	return 0
}

// void drops the block this process holds for account id without giving
// it back: an operator set the balance, which voids the blocks handed out
// before.
func (m *Meter) void(id string) {
	m.withCredits(id, func(cs *creditState) {
		cs.drop()
		cs.exhausted = 0
	})
}

// recheck makes the next request for account id ask the store for
// credits even if it had none a moment ago: an operator added some.
// (Other processes ask again within exhaustedRecheck.)
func (m *Meter) recheck(id string) {
	m.withCredits(id, func(cs *creditState) { cs.exhausted = 0 })
}

// withCredits calls f with the credits this process keeps of account id,
// if it keeps any.
func (m *Meter) withCredits(id string, f func(*creditState)) {
	if m == nil {
		return
	}
	m.mu.Lock()
	a := m.accounts[id]
	m.mu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.credits != nil {
		f(a.credits)
	}
}

// newBlockID names a block, so that a retried operation on it is not
// counted twice.
func newBlockID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}
