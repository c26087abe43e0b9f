package keystore

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"
)

// CreditAccount is the durable part of a credit balance. Gateways take
// credits from it in blocks, spend them from memory, and give back what
// they did not spend; Balance is what no gateway holds.
type CreditAccount struct {
	// ID names the account: a key's id, or ownerAccount of an owner.
	ID string `json:"-"`
	// Balance is what is left of the current period that no gateway holds.
	Balance int64 `json:"balance"`
	// Anchor is when refill periods start counting.
	Anchor time.Time `json:"anchor"`
	// Period is the refill period that Balance belongs to: 0 until the
	// first refill.
	Period int64 `json:"period"`
	// Gen changes when an operator sets the balance: blocks handed out
	// before are void, and what is left of them is not given back.
	Gen uint64 `json:"gen"`
	// Recent are the last blocks handed out and given back, so that an
	// operation retried after its answer was lost is not counted twice.
	Recent []CreditOp `json:"recent,omitempty"`
}

// CreditOp is one block handed out (Amount > 0) or given back (Return).
type CreditOp struct {
	Block  uint64 `json:"block"`
	Amount int64  `json:"amount"`
	Return bool   `json:"return,omitempty"`
	// Gen and Period, of a block handed out, are the account's when it
	// was, so that a gateway that died before hearing of it can give it
	// back (see giveBackReserved).
	Gen    uint64 `json:"gen,omitempty"`
	Period int64  `json:"period,omitempty"`
}

// maxRecentOps bounds CreditAccount.Recent.
const maxRecentOps = 32

// creditTerms are the parts of a plan's credits that an account needs.
type creditTerms struct {
	// Amount is the opening balance and what each refill replaces it with.
	Amount int64
	// Refill is the length of a period; 0 means the balance never refills.
	Refill time.Duration
	// Anchor is when the first period starts, for a new account.
	Anchor time.Time
}

// ownerAccount is the credit account id shared by all the keys of owner:
// "o" and 31 hex digits of a digest of its stored form, as long as a key
// id, so that the two kinds never collide.
func ownerAccount(o Owner) string {
	sum := sha256.Sum256([]byte(o.Encode()))
	return "o" + hex.EncodeToString(sum[:])[:idLen-1]
}

// openOrRefill applies the terms to a (opening it when it did not exist)
// at now: a new period replaces the balance with the amount.
func (a *CreditAccount) openOrRefill(exists bool, t creditTerms, now time.Time) {
	if !exists {
		a.Balance, a.Anchor, a.Period = t.Amount, t.Anchor.Truncate(time.Microsecond), 0
		if a.Anchor.IsZero() || a.Anchor.After(now) {
			a.Anchor = now.Truncate(time.Microsecond)
		}
	}
	if p := a.periodAt(t, now); p > a.Period {
		a.Period, a.Balance = p, t.Amount
	}
}

// periodAt is the refill period at now.
func (a *CreditAccount) periodAt(t creditTerms, now time.Time) int64 {
	if t.Refill <= 0 || now.Before(a.Anchor) {
		return a.Period
	}
	return int64(now.Sub(a.Anchor) / t.Refill)
}

// NextRefill is when the balance is next replaced; zero if never.
func (a *CreditAccount) nextRefill(t creditTerms, now time.Time) time.Time {
	if t.Refill <= 0 {
		return time.Time{}
	}
	return a.Anchor.Add(time.Duration(a.periodAt(t, now)+1) * t.Refill)
}

func (a *CreditAccount) recent(block uint64, ret bool) (CreditOp, bool) {
	for _, op := range a.Recent {
		if op.Block == block && op.Return == ret {
			return op, true
		}
	}
	return CreditOp{}, false
}

func (a *CreditAccount) remember(op CreditOp) {
	a.Recent = append(a.Recent, op)
	if n := len(a.Recent) - maxRecentOps; n > 0 {
		a.Recent = slices.Delete(a.Recent, 0, n)
	}
}

// blockSize is how much of balance one reservation takes: a quarter of
// it in whole requests of cost, so that several gateways can share what
// is left down to the last request, at most maxBlock, and 0 when not even
// one request is left.
func blockSize(balance, cost, maxBlock int64) int64 {
	if cost <= 0 || balance < cost {
		return 0
	}
	n := max(balance/(4*cost), 1)
	if maxBlock >= cost {
		n = min(n, maxBlock/cost)
	}
	return n * cost
}

// reserve is the UpdateCredits function of a reservation of a block for
// requests of cost: it sets *grant.
func reserve(t creditTerms, cost, maxBlock int64, block uint64, now time.Time, grant *CreditOp) func(*CreditAccount, bool) error {
	return func(a *CreditAccount, exists bool) error {
		a.openOrRefill(exists, t, now)
		if op, done := a.recent(block, false); done {
			*grant = op // a try whose answer was lost
			return nil
		}
		*grant = CreditOp{Block: block, Amount: blockSize(a.Balance, cost, maxBlock), Gen: a.Gen, Period: a.Period}
		if grant.Amount > 0 {
			a.Balance -= grant.Amount
			a.remember(*grant)
		}
		return nil
	}
}

// giveBack is the UpdateCredits function that returns amount of block,
// taken in gen and period: nothing if the block is void or came back
// already.
func giveBack(block uint64, amount int64, gen uint64, period int64) func(*CreditAccount, bool) error {
	return func(a *CreditAccount, exists bool) error {
		if !exists || a.Gen != gen || a.Period != period {
			return errCreditsVoid
		}
		if _, done := a.recent(block, true); done {
			return nil
		}
		a.Balance += amount
		a.remember(CreditOp{Block: block, Amount: amount, Return: true})
		return nil
	}
}

// giveBackReserved is the UpdateCredits function that returns, whole, a
// block whose reservation was under way when its gateway died: no request
// spends from a block before its reservation has been answered. The
// reservation is known to have been made if it is among the account's
// recent operations, and then so is its return if it came back (later
// operations are forgotten after earlier ones). A reservation not found
// was not made, or is too old to tell: nothing comes back (errCreditsVoid),
// which can only under-spend.
func giveBackReserved(block uint64) func(*CreditAccount, bool) error {
	return func(a *CreditAccount, exists bool) error {
		op, made := CreditOp{}, false
		if exists {
			op, made = a.recent(block, false)
		}
		if !made {
			return errCreditsVoid
		}
		return giveBack(block, op.Amount, op.Gen, op.Period)(a, exists)
	}
}
