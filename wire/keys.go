package wire

import (
	"context"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// CreatedKey is the create_api_key (and rotate_api_key) result: the key
// itself, then its view. It is the only answer that carries a key.
type CreatedKey struct {
	APIKey string `json:"api_key"`
	KeyView
}

// NewCreatedKey is m's answer.
func NewCreatedKey(m keystore.Minted) CreatedKey {
	return CreatedKey{APIKey: m.Secret, KeyView: NewKeyView(m.Key)}
}

// KeyView is a key as fetch_api_keys lists it, never the key or its hash:
// QueryLake's fields in QueryLake's order, then the extensions.
type KeyView struct {
	ID         string `json:"id"`
	Title      string `json:"title"`
	Created    Epoch  `json:"created"`
	LastUsed   *Epoch `json:"last_used"`
	KeyPreview string `json:"key_preview"`
	Expires    *Epoch `json:"expires,omitempty"`
	// Scopes the key grants.
	Scopes   []string `json:"scopes,omitempty"`
	Disabled bool     `json:"disabled,omitempty"`
	// Rotated keys work only until "expires", the end of their grace.
	Rotated bool `json:"rotated,omitempty"`
	// Orphaned keys belong to a password user who no longer exists and
	// are refused.
	Orphaned bool `json:"orphaned,omitempty"`
	// Leaked keys were reported found in public by a secret scanner and
	// are refused for good.
	Leaked bool `json:"leaked,omitempty"`
	// Plan is the plan the key follows, when it has one (listings only).
	Plan string `json:"plan,omitempty"`
	// Limits are the plan's rate limits (listings only).
	Limits []LimitView `json:"limits,omitempty"`
	// Credits are the key's balance, when its plan has credits
	// (listings only).
	Credits *CreditsView `json:"credits,omitempty"`
}

// NewKeyView is k's view, without its plan.
func NewKeyView(k keystore.Key) KeyView {
	return KeyView{
		ID:         k.ID,
		Title:      k.Title,
		Created:    Epoch(k.Created),
		LastUsed:   OptionalEpoch(k.LastUsed),
		KeyPreview: k.Preview,
		Expires:    OptionalEpoch(k.Expires),
		Scopes:     k.Scopes,
		Disabled:   k.Disabled,
		Rotated:    k.Rotated,
		Orphaned:   k.Orphaned,
		Leaked:     k.Leaked,
	}
}

// LimitView is one rate limit of a key's plan.
type LimitView struct {
	Name  string `json:"name"`
	Limit int64  `json:"limit"`
	// Window in seconds.
	Window int64 `json:"window"`
	// Shared says the limit counts all the keys of the owner together.
	Shared bool `json:"shared,omitempty"`
}

// CreditsView is a key's balance.
type CreditsView struct {
	Remaining int64 `json:"remaining"`
	// Amount is what each refill gives.
	Amount int64 `json:"amount"`
	// Refill is the seconds between refills; absent if the credits never
	// refill.
	Refill int64 `json:"refill,omitempty"`
	// NextRefill is when the balance is next replaced; absent until the
	// first request starts the account's periods.
	NextRefill *Epoch `json:"next_refill,omitempty"`
	// Shared says the balance is the owner's, shared by all its keys.
	Shared bool `json:"shared,omitempty"`
}

// NewCreditsView is b's view.
func NewCreditsView(b keystore.Balance) *CreditsView {
	return &CreditsView{Remaining: b.Remaining, Amount: b.Amount, Refill: int64(b.Refill / time.Second),
		NextRefill: OptionalEpoch(b.NextRefill), Shared: b.Shared}
}

// KeyViews are keys as listings show them, each with its own plan,
// limits and balance (keys without a plan have none): the one join of
// keys and plans, for every listing.
func KeyViews(ctx context.Context, kr *keystore.Keyring, keys []keystore.Key) ([]KeyView, error) {
	views := make([]KeyView, len(keys))
	for i, k := range keys {
		views[i] = NewKeyView(k)
		if len(kr.Policy().Plans) == 0 {
			continue
		}
		if err := withPlan(ctx, kr, k, &views[i]); err != nil {
			return nil, err
		}
	}
	return views, nil
}

// withPlan adds k's plan, limits and balance to its view v.
func withPlan(ctx context.Context, kr *keystore.Keyring, k keystore.Key, v *KeyView) error {
	plan, err := kr.PlanOf(ctx, k)
	if err != nil || plan == nil {
		return err
	}
	v.Plan = plan.Name
	for _, r := range plan.Rates {
		v.Limits = append(v.Limits, LimitView{Name: r.Name, Limit: r.Limit, Window: int64(r.Window / time.Second)})
	}
	for _, r := range plan.OwnerRates {
		v.Limits = append(v.Limits, LimitView{Name: r.Name, Limit: r.Limit, Window: int64(r.Window / time.Second), Shared: true})
	}
	b, ok, err := kr.BalanceOf(ctx, k)
	if err != nil {
		return err
	}
	if ok {
		v.Credits = NewCreditsView(b)
	}
	return nil
}
