package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/presented"
)

// VerifyRules are how a verifier for other proxies (the apikeys_verify
// handler, the apikeys_ext_authz app) reads the requests a proxy asks
// about, and what it asks of their keys. The key is admitted exactly as
// apikey_auth admits it (scopes, plans, rate limits, credits), by the same
// code; the request's credits are spent when the verifier answers, since
// it cannot see whether the upstream answers.
type VerifyRules struct {
	// Header fields to read a key from, besides "Authorization: Bearer",
	// which is always read; e.g. ["X-Api-Key"]. A field's whole value is
	// the key.
	Headers []string `json:"headers,omitempty"`

	// Name of a query parameter of the forwarded URI to read a key from.
	// Off by default: URLs are written to access logs.
	QueryParam string `json:"query_param,omitempty"`

	// Realm announced in the WWW-Authenticate challenge. Default: "apikeys".
	Realm string `json:"realm,omitempty"`

	// Scopes the key must all grant on every route; else 403 with a
	// Bearer insufficient_scope challenge.
	RequireScopes []string `json:"require_scopes,omitempty"`

	// Credits a request spends when no route below says otherwise, when
	// the key's plan has credits; 0 makes requests free. Default: 1.
	Cost *int64 `json:"cost,omitempty"`

	// Routes of the forwarded request, tried in order: the first whose
	// paths and methods match the forwarded request decides its cost and
	// adds its scopes. A request no route matches has the rules above.
	// Default: none.
	Routes []VerifyRoute `json:"routes,omitempty"`

	// Header field by which the asking proxy states the request's cost
	// (apikeys_verify only: apikeys_ext_authz refuses it, since Envoy's
	// Check request carries the client's own fields),
	// in credits (a whole number from 0 to 1000000000, at most 10 digits), overriding the
	// routes'. Off by default. The proxy must set it on every sub-request
	// (nginx's proxy_set_header does), or a client could set it: a
	// malformed or repeated value is refused with 400.
	CostHeader string `json:"cost_header,omitempty"`
}

// VerifyRoute is a route of the forwarded request with its own cost and
// scopes.
type VerifyRoute struct {
	// Path patterns of Caddy's path matcher (`/v1/*`, `*.json`, exact
	// paths), matched against the forwarded path as Caddy matches its
	// own: without regard to letter case, on the cleaned path. Any path
	// when empty.
	Paths []string `json:"paths,omitempty"`

	// Methods (upper case) the route is for; any when empty.
	Methods []string `json:"methods,omitempty"`

	// Scopes the key must grant on this route, besides the verifier's
	// require_scopes.
	RequireScopes []string `json:"require_scopes,omitempty"`

	// Credits a request on this route spends. Default: the verifier's
	// cost.
	Cost *int64 `json:"cost,omitempty"`
}

// maxCost is the largest cost a proxy may state in cost_header.
const maxCost = 1_000_000_000

// verifier decides about requests that a proxy asks about.
type verifier struct {
	admission
	places     presented.Places
	base       routeRule
	routes     []verifyRoute
	costHeader string
}

type verifyRoute struct {
	paths   caddyhttp.MatchPath
	methods []string
	rule    routeRule
}

// newVerifier checks rules and applies their defaults.
func newVerifier(ctx caddy.Context, app *App, logger *zap.Logger, rules VerifyRules) (*verifier, error) {
	headers, err := keyHeaders(slices.Clone(rules.Headers))
	if err != nil {
		return nil, err
	}
	v := &verifier{admission: newAdmission(app, logger, rules.Realm),
		places: presented.Places{Headers: headers, QueryParam: rules.QueryParam}}
	if rules.CostHeader != "" {
		v.costHeader = http.CanonicalHeaderKey(rules.CostHeader)
	}
	cost := costOr(rules.Cost, 1)
	if v.base, err = v.newRouteRule(rules.RequireScopes, cost); err != nil {
		return nil, err
	}
	for i, r := range rules.Routes {
		scopes := append(slices.Clone(rules.RequireScopes), r.RequireScopes...)
		rule, err := v.newRouteRule(scopes, costOr(r.Cost, cost))
		if err != nil {
			return nil, fmt.Errorf("route %d: %w", i, err)
		}
		paths := caddyhttp.MatchPath(slices.Clone(r.Paths))
		if err := paths.Provision(ctx); err != nil {
			return nil, fmt.Errorf("route %d: %w", i, err)
		}
		methods := make([]string, len(r.Methods))
		for j, m := range r.Methods {
			methods[j] = strings.ToUpper(m)
		}
		v.routes = append(v.routes, verifyRoute{paths: paths, methods: methods, rule: rule})
	}
	return v, nil
}

// asked is a request a proxy asks about, as the proxy describes it.
type asked struct {
	// header holds the client request's header fields, where the key is.
	header http.Header
	// method, path (decoded) and rawPath (as sent, if it differs), and
	// rawQuery are those of the client's request.
	method, path, rawPath, rawQuery string
	// ip is the client's address, for the unknown-key budget.
	ip string
}

// url is the URL of q's request.
func (q *asked) url() *url.URL {
	return &url.URL{Path: q.path, RawPath: q.rawPath, RawQuery: q.rawQuery}
}

// admitted is a key admitted for an asked request.
type admitted struct {
	key     *keystore.Key
	verdict keystore.Verdict
	found   presented.Found
}

// decide admits the key of q, spending its credits at once, or refuses
// it; the refusal's header fields (and the RateLimit fields of an
// admitted key) are set on h. ctx must hold a Caddy replacer (for path
// patterns with placeholders).
func (v *verifier) decide(ctx context.Context, h http.Header, q asked) (admitted, error) {
	rule, err := v.ruleFor(ctx, q)
	if err != nil {
		return admitted{}, err
	}
	r := http.Request{Header: q.header, URL: q.url()}
	found, err := v.places.Find(&r)
	if err != nil {
		return admitted{}, v.refuseFind(h, err)
	}
	k, verdict, err := v.admit(ctx, h, found.Key, q.ip, &rule)
	if err != nil {
		return admitted{}, err
	}
	verdict.Charge.Commit()
	return admitted{key: k, verdict: verdict, found: found}, nil
}

// errBadCost refuses a cost_header value that is not a cost.
var errBadCost = errors.New("malformed cost")

// ruleFor is the rule of the first route matching q, with the cost the
// proxy stated, if it may state one.
func (v *verifier) ruleFor(ctx context.Context, q asked) (routeRule, error) {
	rule := v.base
	if len(v.routes) > 0 {
		if ambiguousPath(q.path) {
			return routeRule{}, refuse(http.StatusBadRequest, msgAmbiguousPath)
		}
		r := (&http.Request{Method: q.method, URL: q.url()}).WithContext(ctx)
		for i := range v.routes {
			if v.routes[i].matches(r) {
				rule = v.routes[i].rule
				break
			}
		}
	}
	if v.costHeader == "" {
		return rule, nil
	}
	values := q.header.Values(v.costHeader)
	switch len(values) {
	case 0:
		return rule, nil
	case 1:
		cost, err := parseCost(values[0])
		if err == nil {
			return rule.withCost(cost), nil
		}
	}
	return routeRule{}, refuse(http.StatusBadRequest, "the "+v.costHeader+" field must be one whole number of credits")
}

// msgAmbiguousPath refuses a forwarded path that upstreams may read as
// another path than the routes are matched on.
const msgAmbiguousPath = "the forwarded path is ambiguous"

// ambiguousPath reports whether the decoded path p holds what some
// upstream reads as another path than Caddy's matcher does: ";" (path
// parameters, dropped by Java servers: /admin;x/users is /admin/users),
// "\" (a separator on Windows), "%" (decoded twice by some: %252f),
// a NUL, or a segment ending in "." or " " (dropped by Windows). Only
// the routes' matching needs the path, so only verifiers with routes
// refuse these.
func ambiguousPath(p string) bool {
	if strings.ContainsAny(p, ";\\%\x00") {
		return true
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg != "." && seg != ".." && (strings.HasSuffix(seg, ".") || strings.HasSuffix(seg, " ")) {
			return true
		}
	}
	return false
}

func (r *verifyRoute) matches(req *http.Request) bool {
	if len(r.methods) > 0 && !slices.Contains(r.methods, req.Method) {
		return false
	}
	if len(r.paths) == 0 {
		return true
	}
	ok, err := r.paths.MatchWithError(req)
	return ok && err == nil
}
