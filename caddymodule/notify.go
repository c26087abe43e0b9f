package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
)

// NotifyConfig is a webhook endpoint that hears what happens to keys:
// signed notices (Standard Webhooks: webhook-id, webhook-timestamp,
// webhook-signature) that a key leaked, was revoked or disabled, expires
// soon, or is running out of credits. They are queued in the key store, so that they survive
// restarts and, with several gateways, are sent once by one of them.
type NotifyConfig struct {
	// Where notices are POSTed: https, or http (logged as a warning
	// unless to loopback: anyone on the path could read them).
	URL string `json:"url"`

	// Standard Webhooks secret that signs the notices: "whsec_" and the
	// base64 of at least 24 random bytes (echo whsec_$(openssl rand
	// -base64 32)). Placeholders are expanded. Required.
	Secret string `json:"secret"`

	// Event types sent: key.leaked, key.revoked, key.disabled,
	// key.expiring, credits.low. Default: all.
	Events []string `json:"events,omitempty"`

	// How long before a key expires the endpoint hears of it
	// (key.expiring). Default: 168h (7 days).
	ExpiringWithin caddy.Duration `json:"expiring_within,omitempty"`

	// The balance under which the endpoint hears that a key's (or an
	// owner's) credits run low (credits.low), once per refill period.
	// Default: 0, never.
	CreditsBelow int64 `json:"credits_below,omitempty"`
}

// notifyTimeout bounds the store write that queues a request's notices.
const notifyTimeout = 5 * time.Second

// setUpNotify checks the endpoints and makes the notifier (started by
// Start).
func (a *App) setUpNotify(repl *caddy.Replacer) error {
	if len(a.Notify) == 0 {
		return nil
	}
	ns, ok := a.keyring.Store().(keystore.NoticeStore)
	if !ok {
		return errors.New("notify: the store cannot queue notices")
	}
	var endpoints []notify.Endpoint
	seen := map[string]bool{}
	for i, nc := range a.Notify {
		ep, err := nc.endpoint(repl)
		if err != nil {
			return fmt.Errorf("notify %d: %w", i, err)
		}
		if seen[ep.URL] {
			return fmt.Errorf("notify %d: %s is configured twice", i, ep.URL)
		}
		seen[ep.URL] = true
		if identity.CheckFetchURL(ep.URL) != nil { // http, not to loopback
			a.logger.Warn("notices are sent in the clear: anyone on the path can read them; use https", zap.String("url", ep.URL))
		}
		endpoints = append(endpoints, ep)
	}
	a.notifier = notify.New(notify.Config{
		Endpoints: endpoints,
		Store:     ns,
		Keys:      a.keyring.Keys,
		Logger:    a.logger.Named("notify"),
		OnDelivery: func(typ, outcome string) {
			a.metrics.notices.WithLabelValues(typ, outcome).Inc()
		},
	})
	return nil
}

func (nc *NotifyConfig) endpoint(repl *caddy.Replacer) (notify.Endpoint, error) {
	raw := repl.ReplaceKnown(nc.URL, "")
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return notify.Endpoint{}, fmt.Errorf("url %q is not an http(s) URL", raw)
	}
	secret, err := notify.ParseSecret(repl.ReplaceKnown(nc.Secret, ""))
	if err != nil {
		return notify.Endpoint{}, fmt.Errorf("secret: %w", err)
	}
	for _, e := range nc.Events {
		if !slices.Contains(notify.Types, e) {
			return notify.Endpoint{}, fmt.Errorf("events: unknown event type %q (known: %v)", e, notify.Types)
		}
	}
	if nc.ExpiringWithin < 0 {
		return notify.Endpoint{}, errors.New("expiring_within must not be negative")
	}
	if nc.CreditsBelow < 0 {
		return notify.Endpoint{}, errors.New("credits_below must not be negative")
	}
	return notify.Endpoint{URL: raw, Secret: secret, Types: nc.Events,
		ExpiringWithin: time.Duration(nc.ExpiringWithin), CreditsBelow: nc.CreditsBelow}, nil
}

// startNotify delivers notices until stopNotify, and hears of credits
// taken, for credits.low.
func (a *App) startNotify() {
	if a.notifier == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.notifier.Run(ctx) })
	var hook *func(keystore.CreditsReserved)
	if a.meter != nil && a.notifier.WantsCredits(0) {
		low := make(chan keystore.CreditsReserved, 64)
		f := func(c keystore.CreditsReserved) {
			if a.notifier.WantsCredits(c.Balance) {
				select {
				case low <- c:
				default: // a later block taken tells again
				}
			}
		}
		hook = &f
		a.meter.SetOnReserved(hook)
		wg.Go(func() { a.publishCreditsLow(ctx, low) })
	}
	a.stopNotify = func() {
		if hook != nil {
			a.meter.ClearOnReserved(hook)
		}
		cancel()
		wg.Wait()
	}
}

// publishCreditsLow queues credits.low for accounts seen below an
// endpoint's threshold, each once per refill period (the store also
// refuses a second copy).
func (a *App) publishCreditsLow(ctx context.Context, low <-chan keystore.CreditsReserved) {
	type stretch struct {
		account string
		period  int64
		gen     uint64
	}
	seen := map[stretch]bool{}
	for {
		var c keystore.CreditsReserved
		select {
		case <-ctx.Done():
			return
		case c = <-low:
		}
		id := stretch{c.Account, c.Period, c.Gen}
		if seen[id] {
			continue
		}
		if len(seen) > 10_000 {
			clear(seen)
		}
		seen[id] = true
		ev := notify.LowCredits{CreditsReserved: c, Key: keystore.Key{Owner: c.Owner}}
		if c.Owner == (keystore.Owner{}) { // a key's account: its id is the key's (or its first rotation's)
			if k, err := a.keyring.KeyByID(ctx, c.Account); err == nil {
				ev.Key = k
			}
		}
		pctx, cancel := context.WithTimeout(ctx, notifyTimeout)
		if err := a.notifier.PublishCreditsLow(pctx, ev); err != nil && ctx.Err() == nil {
			a.logger.Error("queuing a credits.low notice", zap.Error(err))
			delete(seen, id)
		}
		cancel()
	}
}

// publish queues notices of what happened to keys; a failure is logged,
// as the change itself is done.
func (a *App) publish(ctx context.Context, events ...notify.Event) {
	if a.notifier == nil || len(events) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
	defer cancel()
	if err := a.notifier.Publish(ctx, events...); err != nil {
		a.logger.Error("queuing notices failed; they will not be sent", zap.Int("events", len(events)), zap.Error(err))
	}
}
