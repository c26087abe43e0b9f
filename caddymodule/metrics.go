package caddymodule

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// metrics are the app's Prometheus collectors, registered in the Caddy
// config's registry so that Caddy's own /metrics endpoints serve them.
type metrics struct {
	minted, deleted, rotated prometheus.Counter
	validations              *prometheus.CounterVec
	credentialFailures       *prometheus.CounterVec
	limited                  *prometheus.CounterVec
	leaks                    *prometheus.CounterVec
	notices                  *prometheus.CounterVec
	storeLatency             *prometheus.HistogramVec
	storeErrors              *prometheus.CounterVec

	// Resolved once: the hot path then costs one atomic add.
	valid, unknown, malformed, expired, revoked, orphaned, insufficientScope, conflicting, overBudget prometheus.Counter
	rateLimited, outOfCredits                                                                         prometheus.Counter
}

const metricsNamespace, metricsSubsystem = "caddy", "apikeys"

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
	}
	m := &metrics{
		minted:  prometheus.NewCounter(prometheus.CounterOpts(opts("keys_minted_total", "API keys created, by owners or operators."))),
		deleted: prometheus.NewCounter(prometheus.CounterOpts(opts("keys_deleted_total", "API keys deleted or revoked."))),
		rotated: prometheus.NewCounter(prometheus.CounterOpts(opts("keys_rotated_total", "API keys replaced by rotation."))),
		validations: prometheus.NewCounterVec(prometheus.CounterOpts(opts("validations_total",
			"Key checks by apikey_auth, by result: valid, unknown, malformed, expired, revoked, orphaned, insufficient_scope, conflicting, over_budget.")), []string{"result"}),
		credentialFailures: prometheus.NewCounterVec(prometheus.CounterOpts(opts("credential_failures_total",
			"Refused credentials on the key-management endpoints, by method: password, oauth2, api_key.")), []string{"method"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts(opts("limited_total",
			"Requests refused by a key's plan, by reason: rate_limit, credits.")), []string{"reason"}),
		leaks: prometheus.NewCounterVec(prometheus.CounterOpts(opts("leak_reports_total",
			"Tokens secret scanners reported, by label: true_positive (a key here, now revoked), false_positive.")), []string{"label"}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts(opts("notice_deliveries_total",
			"Deliveries of notices to notify endpoints, by event type and outcome: delivered, failed (tried again later), given_up.")), []string{"type", "outcome"}),
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "store_operation_duration_seconds",
			Help:    "Time taken by key store operations, by operation.",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"operation"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("store_errors_total",
			"Key store operations that failed with a storage fault, by operation and reason: disk_full (a write refused for room), timeout, store (any other).")), []string{"operation", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.minted, m.deleted, m.rotated, m.validations, m.credentialFailures, m.limited, m.leaks, m.notices, m.storeLatency, m.storeErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.valid = m.validations.WithLabelValues("valid")
	m.unknown = m.validations.WithLabelValues("unknown")
	m.malformed = m.validations.WithLabelValues("malformed")
	m.expired = m.validations.WithLabelValues("expired")
	m.revoked = m.validations.WithLabelValues("revoked")
	m.orphaned = m.validations.WithLabelValues("orphaned")
	m.insufficientScope = m.validations.WithLabelValues("insufficient_scope")
	m.conflicting = m.validations.WithLabelValues("conflicting")
	m.overBudget = m.validations.WithLabelValues("over_budget")
	m.rateLimited = m.limited.WithLabelValues("rate_limit")
	m.outOfCredits = m.limited.WithLabelValues("credits")
	return m, nil
}

// registerStaleness exports, for a shared store, how far behind the
// gateway's key cache may be: the alert to set when a gateway is cut off
// from the cluster.
func registerStaleness(reg prometheus.Registerer, kr *keystore.Keyring) error {
	if _, _, ok := kr.Staleness(); !ok {
		return nil
	}
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
	}
	staleness := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("cache_staleness_seconds",
		"Seconds since the key cache last confirmed it had every change of the shared store; past max_stale, cached keys are no longer trusted.")),
		func() float64 { since, _, _ := kr.Staleness(); return since.Seconds() })
	resets := prometheus.NewCounterFunc(prometheus.CounterOpts(opts("cache_resets_total",
		"Times the key cache was emptied because changes of the shared store may have been missed (including at start).")),
		func() float64 { _, n, _ := kr.Staleness(); return float64(n) })
	for _, c := range []prometheus.Collector{staleness, resets} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// countLimited counts a request refused by its key's plan.
func (m *metrics) countLimited(v keystore.Verdict) {
	if v.Reason == keystore.RateLimited {
		m.rateLimited.Inc()
	} else {
		m.outOfCredits.Inc()
	}
}

// countRefusal counts a failed key check by its cause.
func (m *metrics) countRefusal(err error) {
	switch {
	case errors.Is(err, keystore.ErrMalformedKey):
		m.malformed.Inc()
	case errors.Is(err, keystore.ErrNotFound):
		m.unknown.Inc()
	case errors.Is(err, keystore.ErrExpired):
		m.expired.Inc()
	case errors.Is(err, keystore.ErrDisabled):
		m.revoked.Inc()
	case errors.Is(err, keystore.ErrOrphaned):
		m.orphaned.Inc()
	case errors.Is(err, keystore.ErrOverBudget):
		m.overBudget.Inc()
	}
}

// observeStore records the latency of a store operation of the Keyring.
func (m *metrics) observeStore(op string, took time.Duration, err error) {
	m.storeLatency.WithLabelValues(op).Observe(took.Seconds())
	if err != nil {
		if reason := keystore.FaultReason(err); reason != "" {
			m.storeErrors.WithLabelValues(op, reason).Inc()
		}
	}
}

// Minted counts keys created (ops.Counters).
func (m *metrics) Minted(n int) { m.minted.Add(float64(n)) }

// Deleted counts keys deleted or revoked (ops.Counters).
func (m *metrics) Deleted(n int) { m.deleted.Add(float64(n)) }

// Leaked counts keys reported leaked (ops.Counters).
func (m *metrics) Leaked(n int) { m.leaks.WithLabelValues("true_positive").Add(float64(n)) }

// Rotated counts keys replaced by rotation (api.Counters).
func (m *metrics) Rotated(n int) { m.rotated.Add(float64(n)) }

// CredentialRefused counts a refused credential of the management
// endpoints (api.Counters).
func (m *metrics) CredentialRefused(kind identity.Kind) {
	m.credentialFailures.WithLabelValues(kind.String()).Inc()
}
