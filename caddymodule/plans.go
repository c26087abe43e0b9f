package caddymodule

import (
	"fmt"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// PlanConfig is a named set of rate limits and credits that keys are held
// to. A key follows the plan an operator gave it, else its owner's (a
// config user's plan, a stored user's, or its jwt block's), else the
// app's default_plan; without any, it has no limits.
type PlanConfig struct {
	// Rate limits of each key: at most limit requests in any interval of
	// window, counted in memory. With several gateways on etcd, each
	// enforces its equal part of the limit.
	Rates []RateConfig `json:"rates,omitempty"`

	// Rate limits shared by all the keys of one owner.
	OwnerRates []RateConfig `json:"owner_rates,omitempty"`

	// Credits that requests spend, each the cost of its route
	// (apikey_auth's cost, default 1). Never over-spent, on any number of
	// gateways, even when one is killed.
	Credits *CreditsConfig `json:"credits,omitempty"`
}

// RateConfig is one rate limit.
type RateConfig struct {
	// Name of the limit, in 429 answers and the RateLimit header fields:
	// printable ASCII without quotes. Default: "<limit>/<window>".
	Name string `json:"name,omitempty"`
	// Requests admitted in any interval of window. Required.
	Limit int64 `json:"limit"`
	// Length of the interval, at least 1s. Required.
	Window caddy.Duration `json:"window"`
}

// CreditsConfig is a balance of credits.
type CreditsConfig struct {
	// The balance a key (or owner) starts with, and that each refill
	// replaces what is left with. Required.
	Amount int64 `json:"amount"`
	// How often the balance is replaced by amount, counted from the key's
	// creation (or the owner's first use). Default: never.
	Refill caddy.Duration `json:"refill,omitempty"`
	// One balance for all the keys of an owner instead of one per key.
	// Default: false.
	PerOwner bool `json:"per_owner,omitempty"`
}

// plans translates the plans of the configuration.
func (a *App) plans() (map[string]*keystore.Plan, error) {
	out := make(map[string]*keystore.Plan, len(a.Plans))
	for name, pc := range a.Plans {
		if pc == nil {
			return nil, fmt.Errorf("plan %q is empty", name)
		}
		p := &keystore.Plan{Name: name}
		var err error
		if p.Rates, err = rates(pc.Rates); err != nil {
			return nil, fmt.Errorf("plan %q: %w", name, err)
		}
		if p.OwnerRates, err = rates(pc.OwnerRates); err != nil {
			return nil, fmt.Errorf("plan %q: owner_rates: %w", name, err)
		}
		if c := pc.Credits; c != nil {
			if c.Amount <= 0 {
				return nil, fmt.Errorf("plan %q: credits need a positive amount", name)
			}
			p.Credits = &keystore.Credits{Amount: c.Amount, Refill: time.Duration(c.Refill), PerOwner: c.PerOwner}
		}
		if len(p.Rates) == 0 && len(p.OwnerRates) == 0 && p.Credits == nil {
			return nil, fmt.Errorf("plan %q has neither rates nor credits", name)
		}
		out[name] = p
	}
	return out, nil
}

// warnPerKeyCredits warns of plans that give each key its own credits
// while owners mint their own keys: a new key is a new balance, so such
// credits bound a key, not an owner.
func (a *App) warnPerKeyCredits() {
	minting := map[string]bool{a.policy.DefaultPlan: true}
	for _, u := range a.policy.ConfigUsers {
		minting[u.Plan] = true
	}
	for _, s := range a.policy.Sources {
		minting[s.Plan] = true
	}
	if s := a.policy.AnySource; s != nil {
		minting[s.Plan] = true
	}
	for name, p := range a.policy.Plans {
		if minting[name] && p.Credits != nil && !p.Credits.PerOwner {
			a.logger.Warn("the plan's credits are per key, and its users mint their own keys: each new key brings a new balance; add per_owner to bound what an owner spends",
				zap.String("plan", name))
		}
	}
}

func rates(in []RateConfig) ([]keystore.Rate, error) {
	var out []keystore.Rate
	for _, rc := range in {
		r := keystore.Rate{Name: rc.Name, Limit: rc.Limit, Window: time.Duration(rc.Window)}
		if r.Name == "" {
			r.Name = strconv.FormatInt(r.Limit, 10) + "/" + shortDuration(r.Window)
		}
		for _, c := range []byte(r.Name) {
			if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
				return nil, fmt.Errorf("rate name %q: use printable ASCII without quotes or backslashes", r.Name)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// shortDuration writes d in its largest whole unit: 1m, 90s, 720h.
func shortDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}
