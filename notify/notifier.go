package notify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Defaults of Config.
const (
	DefaultPoll           = time.Second
	DefaultFirstRetry     = time.Second
	DefaultMaxRetry       = time.Hour
	DefaultGiveUpAfter    = 72 * time.Hour
	DefaultScanEvery      = time.Hour
	DefaultKeep           = 7 * 24 * time.Hour
	DefaultLease          = 15 * time.Second
	DefaultTimeout        = 10 * time.Second
	DefaultExpiringWithin = 7 * 24 * time.Hour
	// pruneEvery is how often done notices past their keeping are
	// forgotten.
	pruneEvery = time.Hour
)

// Endpoint receives notices.
type Endpoint struct {
	// URL the notices are POSTed to.
	URL string
	// Secret is the HMAC key (ParseSecret's result).
	Secret []byte
	// Types it receives; empty for all.
	Types []string
	// ExpiringWithin is how long before a key expires the endpoint
	// hears of it (KeyExpiring).
	ExpiringWithin time.Duration
	// CreditsBelow is the balance under which the endpoint hears of
	// credits running low (CreditsLow); 0 for never.
	CreditsBelow int64
}

// ID names the endpoint in the store: a digest of its URL, so that every
// gateway configured with the same URL shares its notices (and a new
// secret keeps them).
func (e Endpoint) ID() string {
	sum := sha256.Sum256([]byte(e.URL))
	return hex.EncodeToString(sum[:8])
}

func (e Endpoint) wants(typ string) bool { return len(e.Types) == 0 || slices.Contains(e.Types, typ) }

// Config sets a Notifier up; zero durations take the defaults.
type Config struct {
	Endpoints []Endpoint
	// Store keeps the notices.
	Store keystore.NoticeStore
	// Keys lists every key, for the expiring scan; nil for none.
	Keys func(context.Context) ([]keystore.Key, error)
	// Client sends deliveries; nil for one with DefaultTimeout.
	Client *http.Client
	Logger *zap.Logger
	// Poll is how often each endpoint's queue is looked at (a local
	// event looks at once).
	Poll time.Duration
	// FirstRetry is the wait after a first failed delivery, doubling at
	// each further failure up to MaxRetry; after GiveUpAfter from the
	// event, the notice is given up.
	FirstRetry, MaxRetry, GiveUpAfter time.Duration
	// ScanEvery is how often keys are scanned for expiry.
	ScanEvery time.Duration
	// Keep is how long a delivered notice is remembered, so that the
	// same event is not queued again.
	Keep time.Duration
	// Lease is how long a gateway has to deliver a notice it took,
	// before another may.
	Lease time.Duration
	// Now is the clock; nil for time.Now.
	Now func() time.Time
	// OnDelivery, if set, is told of each delivery's outcome: delivered,
	// failed (to be tried again) or given_up.
	OnDelivery func(eventType, outcome string)
}

// Notifier queues and delivers notices.
type Notifier struct {
	cfg  Config
	wake []chan struct{} // per endpoint
}

// New makes a Notifier; Run delivers.
func New(cfg Config) *Notifier {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Poll, DefaultPoll)
	def(&cfg.FirstRetry, DefaultFirstRetry)
	def(&cfg.MaxRetry, DefaultMaxRetry)
	def(&cfg.GiveUpAfter, DefaultGiveUpAfter)
	def(&cfg.ScanEvery, DefaultScanEvery)
	def(&cfg.Keep, DefaultKeep)
	def(&cfg.Lease, DefaultLease)
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: DefaultTimeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Endpoints = slices.Clone(cfg.Endpoints)
	n := &Notifier{cfg: cfg}
	for i := range cfg.Endpoints {
		def(&n.cfg.Endpoints[i].ExpiringWithin, DefaultExpiringWithin)
		n.wake = append(n.wake, make(chan struct{}, 1))
	}
	return n
}

// Publish queues events for every endpoint that receives their types,
// durably: they are delivered even if the gateway stops now. It does not
// wait for deliveries.
func (n *Notifier) Publish(ctx context.Context, events ...Event) error {
	return n.PublishTo(ctx, nil, events...)
}

// PublishTo is Publish to the endpoints that to accepts (nil: all).
func (n *Notifier) PublishTo(ctx context.Context, to func(Endpoint) bool, events ...Event) error {
	var notices []keystore.Notice
	woken := make([]bool, len(n.cfg.Endpoints))
	now := n.cfg.Now()
	for _, e := range events {
		if e.ID == "" {
			e.ID = randomID()
		}
		if e.Time.IsZero() {
			e.Time = now
		}
		body, err := e.body()
		if err != nil {
			return err
		}
		keep := e.Time.Add(n.cfg.Keep)
		if e.Type == KeyExpiring && e.Key.Expires.After(e.Time) {
			keep = e.Key.Expires.Add(n.cfg.Keep) // found again until it expires
		}
		for i, ep := range n.cfg.Endpoints {
			if !ep.wants(e.Type) || to != nil && !to(ep) {
				continue
			}
			notices = append(notices, keystore.Notice{Endpoint: ep.ID(), ID: e.ID, Type: e.Type, Body: body, Created: e.Time, KeepUntil: keep})
			woken[i] = true
		}
	}
	if len(notices) == 0 {
		return nil
	}
	if err := n.cfg.Store.AddNotices(ctx, notices); err != nil {
		return fmt.Errorf("queuing notices: %w", err)
	}
	for i, w := range woken {
		if w {
			select {
			case n.wake[i] <- struct{}{}:
			default:
			}
		}
	}
	return nil
}

// Run delivers notices and scans for expiring keys until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range n.cfg.Endpoints {
		wg.Go(func() { n.deliverLoop(ctx, i) })
	}
	if n.cfg.Keys != nil && slices.ContainsFunc(n.cfg.Endpoints, func(e Endpoint) bool { return e.wants(KeyExpiring) }) {
		wg.Go(func() { n.scanLoop(ctx) })
	}
	wg.Wait()
}

func (n *Notifier) deliverLoop(ctx context.Context, i int) {
	t := time.NewTicker(n.cfg.Poll)
	defer t.Stop()
	var pruned time.Time
	for {
		n.deliverDue(ctx, n.cfg.Endpoints[i])
		if now := n.cfg.Now(); now.Sub(pruned) >= pruneEvery {
			pruned = now
			if _, err := n.cfg.Store.PruneNotices(ctx, n.cfg.Endpoints[i].ID(), now); err != nil && ctx.Err() == nil {
				n.cfg.Logger.Warn("forgetting delivered notices", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.wake[i]:
		}
	}
}

// deliverDue delivers the endpoint's notices that are due and not leased
// by another gateway, and forgets done ones past their keeping.
func (n *Notifier) deliverDue(ctx context.Context, ep Endpoint) {
	id := ep.ID()
	notices, err := n.cfg.Store.Notices(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			n.cfg.Logger.Warn("reading queued notices", zap.String("url", ep.URL), zap.Error(err))
		}
		return
	}
	slices.SortFunc(notices, func(a, b keystore.Notice) int { return a.Created.Compare(b.Created) })
	for _, queued := range notices {
		if ctx.Err() != nil {
			return
		}
		now := n.cfg.Now()
		if queued.LeaseUntil.After(now) || queued.NextAttempt.After(now) {
			continue
		}
		taken, err := n.cfg.Store.UpdateNotice(ctx, id, queued.ID, func(q *keystore.Notice) error {
			now := n.cfg.Now()
			if !q.Done.IsZero() || q.LeaseUntil.After(now) || q.NextAttempt.After(now) {
				return keystore.ErrNoticeBusy // another gateway took it first
			}
			q.LeaseUntil = now.Add(n.cfg.Lease)
			return nil
		})
		if err != nil {
			if !errors.Is(err, keystore.ErrNoticeBusy) && !errors.Is(err, keystore.ErrNotFound) {
				n.cfg.Logger.Warn("taking a queued notice", zap.Error(err))
			}
			continue
		}
		n.settle(ctx, ep, taken, n.send(ctx, ep, taken))
	}
}

// send POSTs a notice, signed; nil if the receiver took it (2xx).
func (n *Notifier) send(ctx context.Context, ep Endpoint, q keystore.Notice) error {
	at := n.cfg.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(q.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-apikeys")
	req.Header.Set("webhook-id", q.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("webhook-signature", Sign(ep.Secret, q.ID, at, q.Body))
	res, err := n.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("the receiver answered %s", res.Status)
	}
	return nil
}

// settle records a delivery's outcome: done, or another try later (until
// the notice is given up).
func (n *Notifier) settle(ctx context.Context, ep Endpoint, q keystore.Notice, sendErr error) {
	if ctx.Err() != nil {
		// Stopping: the lease runs out and a gateway delivers it again.
		return
	}
	settled, err := n.cfg.Store.UpdateNotice(ctx, q.Endpoint, q.ID, func(s *keystore.Notice) error {
		now := n.cfg.Now()
		s.LeaseUntil = time.Time{}
		if sendErr == nil {
			s.Done, s.Body, s.LastError = now, nil, ""
			s.KeepUntil = later(s.KeepUntil, now.Add(time.Hour))
			return nil
		}
		s.Attempts++
		s.LastError = sendErr.Error()
		if now.Sub(s.Created) > n.cfg.GiveUpAfter {
			s.Done, s.GaveUp, s.Body = now, true, nil
			return nil
		}
		wait := min(n.cfg.FirstRetry<<min(s.Attempts-1, 30), n.cfg.MaxRetry)
		s.NextAttempt = now.Add(wait)
		return nil
	})
	fields := []zap.Field{zap.String("url", ep.URL), zap.String("webhook_id", q.ID), zap.String("type", q.Type)}
	outcome := "delivered"
	switch {
	case err != nil:
		n.cfg.Logger.Warn("recording a delivery", append(fields, zap.Error(err))...)
	case sendErr == nil:
		n.cfg.Logger.Debug("notice delivered", fields...)
	case settled.GaveUp:
		outcome = "given_up"
		n.cfg.Logger.Error("notice given up after failed deliveries", append(fields, zap.Int("attempts", settled.Attempts), zap.Error(sendErr))...)
	default:
		outcome = "failed"
		n.cfg.Logger.Warn("notice not delivered; trying again later", append(fields, zap.Int("attempts", settled.Attempts), zap.Error(sendErr))...)
	}
	if n.cfg.OnDelivery != nil && err == nil {
		n.cfg.OnDelivery(q.Type, outcome)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (n *Notifier) scanLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.ScanEvery)
	defer t.Stop()
	for {
		if err := n.ScanExpiring(ctx); err != nil && ctx.Err() == nil {
			n.cfg.Logger.Warn("scanning keys for expiry", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ScanExpiring queues KeyExpiring for working keys that expire within an
// endpoint's horizon. Each key's event has a fixed id (its id and
// expiry), so that every gateway's scan queues it once.
func (n *Notifier) ScanExpiring(ctx context.Context) error {
	keys, err := n.cfg.Keys(ctx)
	if err != nil {
		return err
	}
	now := n.cfg.Now()
	var horizon time.Duration
	for _, ep := range n.cfg.Endpoints {
		if ep.wants(KeyExpiring) {
			horizon = max(horizon, ep.ExpiringWithin)
		}
	}
	var events []Event
	for _, k := range keys {
		// Keys in a rotation's grace period expire by design.
		if k.Expires.IsZero() || !k.Expires.After(now) || k.Expires.Sub(now) > horizon || k.Disabled || k.Rotated || k.Orphaned {
			continue
		}
		events = append(events, Event{Type: KeyExpiring, Key: k, Time: now,
			ID: EventID(KeyExpiring, k.ID, strconv.FormatInt(k.Expires.UnixMicro(), 10))})
	}
	return n.publishWithin(ctx, events)
}

// publishWithin publishes expiring events to the endpoints whose horizon
// they are within.
func (n *Notifier) publishWithin(ctx context.Context, events []Event) error {
	now := n.cfg.Now()
	for _, ep := range n.cfg.Endpoints {
		var mine []Event
		for _, e := range events {
			if e.Key.Expires.Sub(now) <= ep.ExpiringWithin {
				mine = append(mine, e)
			}
		}
		if err := n.PublishTo(ctx, func(e Endpoint) bool { return e.URL == ep.URL }, mine...); err != nil {
			return err
		}
	}
	return nil
}

// LowCredits is what a gateway saw of a credit account after taking
// credits from it (keystore.CreditsReserved), with the key it concerns
// (only the owner, for an owner's account).
type LowCredits struct {
	keystore.CreditsReserved
	Key keystore.Key
}

// PublishCreditsLow queues CreditsLow for the endpoints whose threshold
// the balance is below, once per account, refill period and operator
// setting.
func (n *Notifier) PublishCreditsLow(ctx context.Context, c LowCredits) error {
	e := Event{Type: CreditsLow, Key: c.Key,
		ID:      EventID(CreditsLow, c.Account, strconv.FormatInt(c.Period, 10), strconv.FormatUint(c.Gen, 10)),
		Details: map[string]any{"account": c.Account, "balance": c.Balance}}
	return n.PublishTo(ctx, func(ep Endpoint) bool { return c.Balance < ep.CreditsBelow }, e)
}

// WantsCredits reports whether any endpoint hears of credits below
// balance.
func (n *Notifier) WantsCredits(balance int64) bool {
	return slices.ContainsFunc(n.cfg.Endpoints, func(ep Endpoint) bool { return ep.wants(CreditsLow) && balance < ep.CreditsBelow })
}
