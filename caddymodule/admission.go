package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/presented"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// The one way a presented key is admitted, whoever asks: apikey_auth
// before its upstream, apikeys_verify for a proxy's sub-request, and the
// apikeys_ext_authz app for Envoy. The key is verified (unknown,
// malformed, expired, disabled, orphaned: 401), then the route's scopes
// are checked (403), then its cost is taken from the key's plan (429 over
// a limit; 503 when the store cannot reserve credits). Each refusal sets
// the header fields that go with it (WWW-Authenticate, Retry-After,
// RateLimit) on the header it is given and is returned as the error the
// gate has always returned (see refuse), so that every asker refuses
// with the same status, fields and message.

// admission is what a key is admitted by: the app's keyring and limits,
// and the realm of the challenges.
type admission struct {
	app       *App
	logger    *zap.Logger
	challenge string // Bearer realm="…"
	realm     string // without quotes
}

// newAdmission is the admission of app announcing realm (default
// DefaultRealm).
func newAdmission(app *App, logger *zap.Logger, realm string) admission {
	if realm == "" {
		realm = DefaultRealm
	}
	realm = strings.ReplaceAll(realm, `"`, ``)
	return admission{app: app, logger: logger, realm: realm, challenge: `Bearer realm="` + realm + `"`}
}

// routeRule is what a route asks of a key: scopes, all granted, and the
// credits a request spends.
type routeRule struct {
	scopes         []string
	cost           int64
	scopeChallenge string
}

// newRouteRule checks scopes and cost and builds the rule's challenge.
func (a *admission) newRouteRule(scopes []string, cost int64) (routeRule, error) {
	if cost < 0 {
		return routeRule{}, errors.New("cost must not be negative")
	}
	for _, s := range scopes {
		if err := keystore.CheckScope(s); err != nil {
			return routeRule{}, err
		}
	}
	return routeRule{scopes: scopes, cost: cost, scopeChallenge: fmt.Sprintf(`Bearer realm=%q, error="insufficient_scope", scope=%q`,
		a.realm, strings.Join(scopes, " "))}, nil
}

// withCost is rule spending cost instead.
func (r routeRule) withCost(cost int64) routeRule {
	r.cost = cost
	return r
}

// admit admits the key presented by a client at ip on a route with rule:
// it returns the key and the verdict of its limits, whose Charge holds the
// request's credits (the caller commits or cancels it), or the refusal,
// with its header fields set on h. key is "" when none was presented. The
// RateLimit fields of a keyed request are set on h either way.
func (a *admission) admit(ctx context.Context, h http.Header, key, ip string, rule *routeRule) (*keystore.Key, keystore.Verdict, error) {
	if key == "" {
		h.Set("WWW-Authenticate", a.challenge)
		return nil, keystore.Verdict{}, refuse(http.StatusUnauthorized, msgKeyRequired)
	}
	k, err := a.app.keyring.VerifyWithin(ctx, key, a.app.unknownBudget, ip)
	if err != nil {
		h.Set("WWW-Authenticate", a.challenge+`, error="invalid_token"`)
		if isRefusal(err) {
			a.app.metrics.countRefusal(err)
		} else {
			// The store cannot tell: refused, as a key it does not know.
			a.logger.Error("key store failure while checking a key", zap.String("reason", keystore.FaultReason(err)), zapError(err))
		}
		return nil, keystore.Verdict{}, refuse(http.StatusUnauthorized, msgKeyRequired)
	}
	a.app.metrics.valid.Inc()
	for _, want := range rule.scopes {
		if !slices.Contains(k.Scopes, want) {
			a.app.metrics.insufficientScope.Inc()
			return nil, keystore.Verdict{}, scopeRefusal(h, rule.scopeChallenge, want)
		}
	}
	v, err := k.Limits().Take(ctx, rule.cost)
	if err != nil {
		a.logger.Error("key store failure while charging credits", zap.String("reason", keystore.FaultReason(err)), zapError(err))
		h.Set("Retry-After", strconv.Itoa(wire.Unavailable.RetryAfter))
		return nil, keystore.Verdict{}, refuse(http.StatusServiceUnavailable, wire.Unavailable.Msg)
	}
	writeRateLimitFields(h, v)
	if !v.Allowed {
		a.app.metrics.countLimited(v)
		return nil, v, limitedRefusal(h, v)
	}
	return k, v, nil
}

// refuseFind refuses a request whose key cannot be taken from it: a body
// the gate cannot read, or two keys. (Apart from admit, so that the
// usual request does not pay for errors.As.)
func (a *admission) refuseFind(h http.Header, err error) error {
	var be *presented.BodyError
	if errors.As(err, &be) {
		return refuse(be.Status, be.Msg)
	}
	// Two keys: whichever the gateway checked, the upstream might read
	// the other.
	h.Set("WWW-Authenticate", a.challenge+`, error="invalid_request"`)
	a.app.metrics.conflicting.Inc()
	return refuse(http.StatusUnauthorized, msgTwoKeys)
}

func isRefusal(err error) bool {
	return errors.Is(err, keystore.ErrMalformedKey) || errors.Is(err, keystore.ErrNotFound) ||
		errors.Is(err, keystore.ErrExpired) || errors.Is(err, keystore.ErrDisabled) ||
		errors.Is(err, keystore.ErrOrphaned) || errors.Is(err, keystore.ErrOverBudget)
}
