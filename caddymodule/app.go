// Package caddymodule holds the Caddy modules of caddy-apikeys and their
// Caddyfile syntax: the apikeys app (its stores, key policy, plans,
// notices and metrics), the apikeys_api handler that owners mint and
// manage keys with, the apikey_auth handler that checks keys and holds
// them to their plans, the apikeys_leaks handler that secret scanners
// report leaked keys to, the apikeys_ui key page, the store modules, and
// the admin API route that serves package ops. It translates
// configuration; the rules live in the packages it configures.
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the apikeys app: it owns the key store and knows the users and
// token issuers that may mint keys. The apikeys_api and apikey_auth
// handlers both use it. Configure it with the global
// option block `apikeys { … }`; without one, the defaults apply.
type App struct {
	// Where keys and users are kept. Default: the bbolt store in the data
	// directory (`{"backend": "bolt"}`).
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=apikeys.stores inline_key=backend"`

	// Prefix of minted keys. Default: "sk-". Keys are the prefix followed
	// by 48 base62 characters, the last 6 of which are a checksum.
	KeyPrefix string `json:"key_prefix,omitempty"`

	// Users who may mint keys with a username and password, in addition
	// to users kept in the store. Passwords are bcrypt or argon2id hashes,
	// as printed by `caddy hash-password`. Removing a user refuses their
	// keys from the next request on (they work again if the user is
	// declared again).
	Users []User `json:"users,omitempty"`

	// The issuers whose OAuth2 JWTs prove a user's identity, each with its
	// own keys, audience and claims; a token is checked by the issuer its
	// "iss" names (at most one may leave issuer unset, to take the rest).
	// Default: tokens are not accepted.
	JWT []*JWTConfig `json:"jwt,omitempty"`

	// Further sources of identities, modules of the apikeys.identities
	// namespace (each an identity.Source), beside the password users and
	// the jwt issuers; at most one source checks each kind of credential.
	// Default: none.
	IdentitiesRaw []json.RawMessage `json:"identities,omitempty" caddy:"namespace=apikeys.identities inline_key=source"`

	// Lifetime of keys minted without "expires_in". Default: keys never
	// expire (0).
	DefaultKeyLifetime caddy.Duration `json:"default_key_lifetime,omitempty"`

	// Longest lifetime a key may be minted with; longer "expires_in" is
	// refused with 400. Default: none (0). When set, keys minted
	// without "expires_in" get this lifetime unless default_key_lifetime
	// is shorter.
	MaxKeyLifetime caddy.Duration `json:"max_key_lifetime,omitempty"`

	// Most keys one owner may hold, counting keys in a rotation's grace
	// period; minting more, or rotating with a grace period at the limit,
	// is refused with 409. Operators (the admin API and the CLI) are not
	// held to it. Default: no limit (0).
	MaxKeysPerUser int `json:"max_keys_per_user,omitempty"`

	// The scope vocabulary: the only scope names keys may have; others are
	// refused with 400, and every grant (of users, stored users and
	// issuers) must be among them. Which of them a given key may have
	// depends on what its minter was granted. Default: any scope name.
	AllowedScopes []string `json:"allowed_scopes,omitempty"`

	// Named plans of rate limits and credits that keys are held to; see
	// PlanConfig. Default: none, keys have no limits.
	Plans map[string]*PlanConfig `json:"plans,omitempty"`

	// The plan of keys that have none of their own and whose owner has
	// none. Default: none.
	DefaultPlan string `json:"default_plan,omitempty"`

	// Lockout after repeated password failures. Default: on, with the
	// defaults of LockoutConfig.
	Lockout *LockoutConfig `json:"lockout,omitempty"`

	// Most password-hash comparisons run at once; further sign-ins wait
	// (up to 5s, then 503) so that a flood of them cannot starve proxied
	// traffic of CPU. Default: the number of CPUs.
	MaxConcurrentPasswordChecks int `json:"max_concurrent_password_checks,omitempty"`

	// Most sign-ins waiting for a password-hash comparison; beyond it
	// they are answered 503 with Retry-After at once rather than held.
	// Default: 8 per concurrent check.
	MaxQueuedPasswordChecks int `json:"max_queued_password_checks,omitempty"`

	// How many keys that turn out not to exist each client address may
	// have looked up in the store; once spent, keys the gateway does not
	// know are refused (401) without a store read. Default: on, with the
	// defaults of UnknownKeyBudget.
	UnknownKeyBudget *UnknownKeyBudget `json:"unknown_key_budget,omitempty"`

	// How many verified keys are kept in memory so that checking a key
	// needs no store read. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`

	// How often last-used times, recorded in memory as keys are used, are
	// written to the store. Pending times are also written on shutdown
	// and reload. Default: 5s.
	LastUsedFlushInterval caddy.Duration `json:"last_used_flush_interval,omitempty"`

	// Webhook endpoints that hear what happens to keys (leaked, revoked,
	// disabled, expiring soon); see NotifyConfig. Default: none.
	Notify []*NotifyConfig `json:"notify,omitempty"`

	policy  keystore.Policy
	store   StoreOpener
	release func() error
	// releaseMeter lets go of the pooled Meter of the store, if any.
	releaseMeter func() error
	// releaseMembers lets go of the store's membership among the
	// gateways, if it is shared; stopShare stops the lockout hearing it.
	releaseMembers func() error
	stopShare      func()
	throttle       *identity.Throttle // nil with lockout off
	// unknownBudget is unknown.allow, made once: a per-request closure
	// would cost an allocation on every key check.
	unknownBudget keystore.ReadBudget
	keyring       *keystore.Keyring
	verifier      *identity.Verifier
	unknown       *unknownKeys
	stopJWKS      context.CancelFunc
	notifier      *notify.Notifier
	stopNotify    func()
	meter         *keystore.Meter // nil without plans
	metrics       *metrics
	logger        *zap.Logger
	audit         *zap.Logger
	ctx           caddy.Context
}

// LockoutConfig tunes the lockout that follows repeated password
// failures, counted per username (existing or not) and per client
// address. A locked caller gets 429 with Retry-After; a successful
// sign-in clears its username's count on the gateway that checked it.
//
// Gateways sharing an etcd store divide both thresholds among
// themselves: each counts in memory and locks at its part (the threshold
// divided by the number of live gateways, the remainder going one each
// to the first), so that all of them together check at most the
// threshold. A gateway whose part is 0 (more gateways than the
// threshold) checks no password and refuses every sign-in with 429.
type LockoutConfig struct {
	// Turns lockouts off.
	Disabled bool `json:"disabled,omitempty"`
	// Failures of one username within the window that lock it, on all
	// the gateways sharing the store together. Default 10.
	AccountThreshold int `json:"account_threshold,omitempty"`
	// Failures from one client address within the window that lock it,
	// on all the gateways sharing the store together; IPv6 clients are
	// counted by their /64. Default 50.
	AddressThreshold int `json:"address_threshold,omitempty"`
	// How long failures are counted. Default 15m.
	Window caddy.Duration `json:"window,omitempty"`
	// The first lockout; each further one in the window doubles it.
	// Default 1m.
	Duration caddy.Duration `json:"duration,omitempty"`
	// The longest lockout. Default 15m.
	MaxDuration caddy.Duration `json:"max_duration,omitempty"`
}

func (c *LockoutConfig) throttle() *identity.Throttle {
	if c == nil {
		return identity.NewThrottle(identity.LockoutPolicy{}, nil)
	}
	if c.Disabled {
		return nil
	}
	return identity.NewThrottle(identity.LockoutPolicy{
		AccountThreshold: c.AccountThreshold,
		AddressThreshold: c.AddressThreshold,
		Window:           time.Duration(c.Window),
		Lockout:          time.Duration(c.Duration),
		MaxLockout:       time.Duration(c.MaxDuration),
	}, nil)
}

// User is a user declared in the configuration.
type User struct {
	// The username: 1 to 128 bytes of UTF-8 without control characters.
	// Placeholders are expanded.
	Username string `json:"username"`
	// The bcrypt or argon2id hash of the password, as printed by
	// `caddy hash-password`. Placeholders are expanded, so the hash can
	// come from {env.*} or {file.*}.
	Password string `json:"password"`
	// Scopes the user may give their keys; a mint asking for another is
	// refused with 403. Default: none, so the user's keys have no scopes.
	Scopes []string `json:"scopes,omitempty"`
	// The plan the user's keys follow unless a key has its own. Default:
	// default_plan.
	Plan string `json:"plan,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apikeys",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision opens the store and prepares credential checks.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.audit = a.logger.Named("audit")
	repl := caddy.NewReplacer()
	if a.MaxQueuedPasswordChecks < 0 {
		return errors.New("max_queued_password_checks must not be negative")
	}
	policy, users, err := a.policyAndHashes(repl)
	if err != nil {
		return err
	}
	a.policy = policy
	a.warnPerKeyCredits()
	if a.metrics, err = newMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}

	a.KeyPrefix = repl.ReplaceKnown(a.KeyPrefix, "")
	if a.KeyPrefix == "" {
		a.KeyPrefix = keystore.DefaultPrefix
	}
	// JWKS fetchers live as long as this config.
	var jwksCtx context.Context
	jwksCtx, a.stopJWKS = context.WithCancel(context.Background())
	var issuers identity.JWTIssuers
	unpinned := 0
	for i, jc := range a.JWT {
		cfg, err := jc.resolve(jwksCtx, repl, a.logger)
		if err != nil {
			return fmt.Errorf("jwt %d: %w", i, err)
		}

		v, err := identity.NewJWTVerifier(cfg)
		if err != nil {
			return fmt.Errorf("jwt %d: %w", i, err)
		}
		if cfg.Issuer == "" {
			if unpinned++; unpinned > 1 {
				return errors.New("jwt: at most one issuer may leave issuer unset")
			}
		}
		issuers = append(issuers, v)
	}

	if a.StoreRaw == nil {
		a.StoreRaw = json.RawMessage(`{"backend": "bolt"}`)
	}
	mod, err := ctx.LoadModule(a, "StoreRaw")
	if err != nil {
		return fmt.Errorf("loading store: %w", err)
	}
	a.store = mod.(StoreOpener)
	store, release, err := a.store.Open()
	if err != nil {
		return fmt.Errorf("opening key store: %w", err)
	}
	a.release = release
	// Gateways sharing the store divide the lockout's thresholds and the
	// rate limits by their number: join them whether or not plans exist.
	var members *members
	if sharedStore(store) {
		if members, a.releaseMembers, err = a.joinMembers(); err != nil {
			return fmt.Errorf("joining the gateways sharing the store: %w", err)
		}
	}
	var maxStale time.Duration
	if b, ok := a.store.(StaleBounder); ok {
		maxStale = b.StaleBound()
	}
	var meter *keystore.Meter
	if len(a.policy.Plans) > 0 {
		if meter, a.releaseMeter, err = a.openMeter(); err != nil {
			return fmt.Errorf("plans: %w", err)
		}
	}
	a.meter = meter
	a.keyring = keystore.NewKeyring(store, keystore.Options{
		Observer:      a.metrics.observeStore,
		Prefix:        a.KeyPrefix,
		CacheSize:     a.CacheSize,
		FlushInterval: time.Duration(a.LastUsedFlushInterval),
		MaxStale:      maxStale,
		Policy:        a.policy,
		Meter:         meter,
		OnFlushError: func(err error) {
			a.logger.Error("writing last-used times", zap.Error(err))
		},
	})
	if b := a.UnknownKeyBudget; b != nil && (b.Rate < 0 || b.Burst < 0) {
		return errors.New("unknown_key_budget: rate and burst must not be negative")
	}
	a.unknown = a.UnknownKeyBudget.limiter()
	a.unknownBudget = a.unknown.allow
	if err := registerStaleness(ctx.GetMetricsRegistry(), a.keyring); err != nil {
		return err
	}
	if err := a.setUpNotify(repl); err != nil {
		return err
	}
	a.throttle = a.Lockout.throttle()
	if a.throttle != nil && members != nil {
		a.stopShare = members.listen(a.shareLockout(a.throttle))
	}
	sources := []identity.Source{identity.NewPasswords(users, storedUserLookup(a.keyring), identity.PasswordOptions{
		Throttle:            a.throttle,
		MaxConcurrentHashes: a.MaxConcurrentPasswordChecks,
		MaxQueuedHashes:     a.MaxQueuedPasswordChecks,
		StoredHashes:        storedHashes(a.keyring),
	})}
	if len(issuers) > 0 {
		sources = append(sources, identity.NewTokens(issuers, 0))
	}
	more, err := a.identitySources(ctx, sources)
	if err != nil {
		return err
	}
	a.verifier = identity.NewVerifier(append(sources, more...)...)
	return nil
}

// shareLockout returns what makes th enforce its part of the thresholds
// whenever the gateways sharing the store change. A part of 0 is warned
// of: sign-ins through this gateway are then all refused.
func (a *App) shareLockout(th *identity.Throttle) func(keystore.Members) {
	logger := a.logger
	return func(ms keystore.Members) {
		index, count := ms.Index(), ms.Count()
		th.SetShare(index, count)
		if acct, addr := th.Limits(); acct == 0 || addr == 0 {
			logger.Warn("more gateways share the store than a lockout threshold: this one checks no passwords and refuses every sign-in with 429; "+
				"raise account_threshold and address_threshold to at least the number of gateways",
				zap.Int("gateways", count), zap.Int("index", index), zap.Int("account_part", acct), zap.Int("address_part", addr))
		}
	}
}

func storedUserLookup(kr *keystore.Keyring) identity.UserLookup {
	return func(ctx context.Context, name string) (string, bool, error) {
		u, err := kr.StoredUser(ctx, name)
		if errors.Is(err, keystore.ErrNotFound) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		return u.PasswordHash, true, nil
	}
}

// storedHashes lists the stored users' password hashes, so that the
// verifier knows the cost of every kind of hash in use.
func storedHashes(kr *keystore.Keyring) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		users, err := kr.StoredUsers(ctx)
		hashes := make([]string, 0, len(users))
		for _, u := range users {
			hashes = append(hashes, u.PasswordHash)
		}
		return hashes, err
	}
}

// Start checks, now that every app of the config is provisioned, that
// no access log records keys in clear; the app serves through its
// handlers.
func (a *App) Start() error {
	a.warnUnfilteredKeys()
	a.startNotify()
	return nil
}

// Stop stops delivering notices (queued ones wait in the store for the
// next config or gateway); other resources are released in Cleanup,
// after the HTTP servers of the same config have drained.
func (a *App) Stop() error {
	if a.stopNotify != nil {
		a.stopNotify()
		a.stopNotify = nil
	}
	return nil
}

// Cleanup writes pending last-used times and releases the store. It is
// safe after a Provision that failed part-way. The keyring stays in place,
// closed: after a reload, this config's servers may still be finishing
// requests, whose handlers then answer from the store if another config
// holds it open, or that it is unavailable.
func (a *App) Cleanup() error {
	if a.stopJWKS != nil {
		a.stopJWKS()
	}
	_ = a.Stop()
	var errs []error
	if a.keyring != nil {
		errs = append(errs, a.keyring.Close())
	}
	if a.stopShare != nil {
		a.stopShare()
		a.stopShare = nil
	}
	if a.releaseMeter != nil {
		errs = append(errs, a.releaseMeter())
		a.releaseMeter = nil
	}
	if a.releaseMembers != nil {
		errs = append(errs, a.releaseMembers())
		a.releaseMembers = nil
	}
	if a.release != nil {
		errs = append(errs, a.release())
		a.release = nil
	}
	return errors.Join(errs...)
}

// appFrom fetches the apikeys app for a handler.
func appFrom(ctx caddy.Context) (*App, error) {
	v, err := ctx.App("apikeys")
	if err != nil {
		return nil, err
	}
	return v.(*App), nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
