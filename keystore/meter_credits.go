package keystore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"
)

// creditState is an account's credits as this process holds them: the
// block it took last (its counters live in a ledger slot) and what the
// store said then.
type creditState struct {
	terms     CreditTerms
	ledger    *ledger
	slot      *ledgerSlot // the held block; nil when none
	slotIndex int
	anchor    time.Time // of the account's periods
	balance   int64     // the store's balance after the last operation
	known     bool      // balance and anchor come from the store
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

// spend takes cost from the held block. need says that a new block is
// needed first; !ok && !need means the credits are spent.
func (cs *creditState) spend(cost int64, now time.Time) (ok, need bool) {
	if cost <= 0 {
		return true, false
	}
	if s := cs.slot; s != nil {
		if s.period != cs.period(now) && cs.terms.Refill > 0 {
			// A new period replaced the balance: the block is void.
			cs.drop()
		} else if s.reserved-s.spent >= cost {
			s.spent += cost
			return true, false
		}
	}
	if cs.exhausted != 0 && now.UnixNano()-cs.exhausted < int64(exhaustedRecheck) && cs.period(now) == cs.exhaustedIn &&
		cost > cs.balance {
		return false, false
	}
	return false, true
}

// drop lets go of the held block without giving anything back: it is
// void.
func (cs *creditState) drop() {
	if cs.slot != nil {
		cs.ledger.release(cs.slot, cs.slotIndex)
		cs.slot = nil
	}
}

// unspent is what is left of the held block.
func (cs *creditState) unspent() int64 {
	if cs.slot == nil {
		return 0
	}
	return cs.slot.reserved - cs.slot.spent
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
	var back *ledgerSlot
	var backIndex int
	if cs.slot != nil {
		back, backIndex = cs.slot, cs.slotIndex
		back.state = slotReturning
		cs.slot = nil
	}
	terms := cs.terms
	a.mu.Unlock()

	now := m.now()
	block := newBlockID()
	slot, index := m.ledger.take(a.id, block)
	var grant CreditOp
	maxBlock := max(cost, terms.Amount/8)
	acct, err := m.store.UpdateCredits(ctx, a.id, func(acct *CreditAccount, exists bool) error {
		if back != nil && back.reserved > back.spent {
			err := giveBack(back.block, back.reserved-back.spent, back.gen, back.period)(acct, exists)
			if err != nil && !errors.Is(err, ErrCreditsVoid) {
				return err
			}
		}
		return reserve(terms, cost, maxBlock, block, now, &grant)(acct, exists)
	})

	a.mu.Lock()
	defer a.mu.Unlock()
	defer close(done)
	cs.reserving = nil
	if err != nil {
		m.ledger.release(slot, index)
		if back != nil { // not given back: it stays held, usable again
			back.state = slotHeld
			if cs.slot == nil {
				cs.slot, cs.slotIndex = back, backIndex
			} else {
				m.ledger.release(back, backIndex)
			}
		}
		return err
	}
	if back != nil {
		m.ledger.release(back, backIndex)
	}
	cs.anchor, cs.balance, cs.known = acct.Anchor, acct.Balance, true
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
		if cs == nil || cs.slot == nil || cs.reserving != nil {
			a.mu.Unlock()
			continue
		}
		back, index := cs.slot, cs.slotIndex
		back.state = slotReturning
		cs.slot = nil
		a.mu.Unlock()
		err := m.giveBack(ctx, a.id, back)
		m.ledger.release(back, index)
		if err != nil && m.onError != nil {
			m.onError(err)
		}
	}
}

// giveBack returns what is left of the block in slot to the account id.
func (m *Meter) giveBack(ctx context.Context, id string, s *ledgerSlot) error {
	left := s.reserved - s.spent
	if left <= 0 {
		return nil
	}
	_, err := m.store.UpdateCredits(ctx, id, giveBack(s.block, left, s.gen, s.period))
	if errors.Is(err, ErrCreditsVoid) {
		return nil
	}
	return err
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
		if l.trusted && l.unspent > 0 {
			_, err := m.store.UpdateCredits(ctx, l.account, giveBack(l.block, l.unspent, l.gen, l.period))
			if err != nil && !errors.Is(err, ErrCreditsVoid) {
				retry = append(retry, l)
				if m.onError != nil {
					m.onError(err)
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
func storedBalance(ctx context.Context, store Store, id string, terms CreditTerms, now time.Time) (CreditAccount, int64, time.Time, error) {
	acct, err := store.CreditAccount(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return CreditAccount{}, terms.Amount, time.Time{}, nil
	case err != nil:
		return CreditAccount{}, 0, time.Time{}, err
	}
	remaining := acct.Balance
	if acct.PeriodAt(terms, now) > acct.Period {
		remaining = terms.Amount
	}
	return acct, remaining, acct.NextRefill(terms, now), nil
}

// unspentOf is what this process holds unspent of the current block of
// account id, if it belongs to acct's generation and period at now.
func (m *Meter) unspentOf(id string, acct CreditAccount, terms CreditTerms, now time.Time) int64 {
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
	if cs := a.credits; cs != nil && cs.slot != nil && cs.slot.gen == acct.Gen && cs.slot.period == acct.PeriodAt(terms, now) {
		return cs.unspent()
	}
	return 0
}

// void drops the block this process holds for account id without giving
// it back: an operator set the balance, which voids the blocks handed out
// before.
func (m *Meter) void(id string) {
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
	if cs := a.credits; cs != nil {
		cs.drop()
		cs.exhausted = 0
	}
	a.mu.Unlock()
}

// newBlockID names a block, so that a retried operation on it is not
// counted twice.
func newBlockID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}
