package keystore

import (
	"fmt"
	"time"
)

// Rate is one rate limit: at most Limit requests in any interval of
// length Window.
type Rate struct {
	// Name identifies the limit in answers and RateLimit fields.
	Name string
	// Limit is how many requests the window admits.
	Limit int64
	// Window is the length of the interval.
	Window time.Duration
}

// Credits is a balance that requests spend, each the cost of its route.
type Credits struct {
	// Amount is the balance an account starts with, and the balance each
	// refill replaces the remainder with.
	Amount int64
	// Refill is how often the balance is replaced by Amount, counted from
	// the account's first use; 0 means never.
	Refill time.Duration
	// PerOwner makes one balance for all the keys of an owner instead of
	// one per key.
	PerOwner bool
}

// Plan is a named set of limits and credits that keys are held to.
type Plan struct {
	// Name is how users, keys and the configuration refer to the plan.
	Name string
	// Rates limit each key.
	Rates []Rate
	// OwnerRates limit all the keys of one owner together.
	OwnerRates []Rate
	// Credits, if set, is a balance that requests spend.
	Credits *Credits
}

// Check validates a plan.
func (p *Plan) Check() error {
	if err := CheckName(p.Name); err != nil {
		return fmt.Errorf("plan name: %w", err)
	}
	for _, rates := range [][]Rate{p.Rates, p.OwnerRates} {
		for _, r := range rates {
			if r.Limit <= 0 || r.Window < time.Second {
				return fmt.Errorf("plan %s: rate %q: the limit must be positive and the window at least a second", p.Name, r.Name)
			}
			if err := CheckName(r.Name); err != nil {
				return fmt.Errorf("plan %s: rate name: %w", p.Name, err)
			}
		}
	}
	if c := p.Credits; c != nil && (c.Amount < 0 || c.Refill < 0 || c.Refill > 0 && c.Refill < time.Second) {
		return fmt.Errorf("plan %s: credits must not be negative, and refills at most every second", p.Name)
	}
	return nil
}

// UserRules are what the configuration or the store says about a password
// user: the scopes it may give keys and the plan its keys follow.
type UserRules struct {
	// Scopes the user may give keys.
	Scopes []string
	// Plan the user's keys follow unless a key has its own; empty means
	// the default plan.
	Plan string
}

// plan returns the plan named, the default plan for "", or nil when
// there is none.
func (p *Policy) plan(name string) *Plan {
	if name == "" {
		name = p.DefaultPlan
	}
	return p.Plans[name]
}

// checkPlan returns ErrUnknownPlan unless name is "" or a defined plan.
func (p *Policy) checkPlan(name string) error {
	if name != "" && p.Plans[name] == nil {
		return fmt.Errorf("%w %q", ErrUnknownPlan, name)
	}
	return nil
}
