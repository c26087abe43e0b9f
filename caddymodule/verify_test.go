package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// testVerifier provisions apikeys_verify with rules on a fresh app with
// the plans of config's "plans" member (may be empty).
func testVerifier(t *testing.T, rules VerifyRules, plans string) (*VerifyHandler, *App) {
	t.Helper()
	app := appWithPlans(t, plans)
	h := &VerifyHandler{VerifyRules: rules}
	var err error
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if h.verifier, err = newVerifier(ctx, app, zap.NewNop(), rules); err != nil {
		t.Fatal(err)
	}
	return h, app
}

// appWithPlans is a fresh app with the plans of config's "plans" member
// (may be empty).
func appWithPlans(t testing.TB, plans string) *App {
	t.Helper()
	cfg := `{"store": ` + storeJSON(filepath.Join(t.TempDir(), "k.db"))
	if plans != "" {
		cfg += `, "plans": ` + plans
	}
	app, err := provisionApp(t, cfg+`}`)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func mintFor(t testing.TB, app *App, req keystore.KeyRequest) keystore.Minted {
	t.Helper()
	m, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, req)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// verifyAnswer is what the asking proxy sees.
type verifyAnswer struct {
	status int
	header http.Header
	body   string
	err    error
}

// askVerifier sends the sub-request r to h.
func askVerifier(h *VerifyHandler, r *http.Request) verifyAnswer {
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	err := h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		panic("apikeys_verify called the next handler")
	}))
	a := verifyAnswer{status: w.Code, header: w.Header(), body: w.Body.String(), err: err}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		a.status = he.StatusCode
	}
	return a
}

// subRequest is a forward_auth-style sub-request for the client request
// method uri with header fields kv.
func subRequest(method, uri string, kv ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/verify", nil)
	r.Header.Set("X-Forwarded-Method", method)
	r.Header.Set("X-Forwarded-Uri", uri)
	for i := 0; i+1 < len(kv); i += 2 {
		r.Header.Add(kv[i], kv[i+1])
	}
	return r
}

// noKeyIn fails if the answer holds secret anywhere.
func noKeyIn(t *testing.T, a verifyAnswer, secret string) {
	t.Helper()
	if strings.Contains(a.body, secret) || (a.err != nil && strings.Contains(a.err.Error(), secret)) {
		t.Fatal("the answer holds the key")
	}
	for name, vs := range a.header {
		for _, v := range vs {
			if strings.Contains(v, secret) || strings.Contains(v, secret[len(secret)-12:]) {
				t.Fatalf("the answer's %s holds the key", name)
			}
		}
	}
}

func TestVerifyAnswersWithTheIdentity(t *testing.T) {
	h, app := testVerifier(t, VerifyRules{Headers: []string{"X-Api-Key"}, QueryParam: "api_key"}, "")
	m := mintFor(t, app, keystore.KeyRequest{Title: "ci", Scopes: []string{"read", "write"}})
	for _, r := range []*http.Request{
		subRequest("GET", "/v1/x", "Authorization", "Bearer "+m.Secret),
		subRequest("POST", "/v1/x", "X-Api-Key", m.Secret),
		subRequest("GET", "/v1/x?a=1&api_key="+m.Secret),
	} {
		a := askVerifier(h, r)
		if a.status != http.StatusOK || a.err != nil {
			t.Fatalf("%v: %d %v, want 200", r.Header, a.status, a.err)
		}
		want := map[string]string{FieldUser: "alice", FieldSource: "service", FieldKeyID: m.Key.ID, FieldScopes: "read write", "Cache-Control": "no-store"}
		for f, v := range want {
			if got := a.header.Get(f); got != v {
				t.Errorf("%s: %q, want %q", f, got, v)
			}
		}
		if a.header.Get(FieldCreditsRemaining) != "" || a.header.Get("Ratelimit") != "" {
			t.Errorf("limits reported for a key without a plan: %v", a.header)
		}
		noKeyIn(t, a, m.Secret)
	}
}

// A key in the verifier's own URI is not read when the proxy forwards the
// client's: the client's request is the one decided on.
func TestVerifyReadsTheForwardedURI(t *testing.T) {
	h, app := testVerifier(t, VerifyRules{QueryParam: "api_key"}, "")
	m := mintFor(t, app, keystore.KeyRequest{})
	r := httptest.NewRequest(http.MethodGet, "/verify?api_key="+m.Secret, nil)
	r.Header.Set("X-Forwarded-Uri", "/v1/")
	if a := askVerifier(h, r); a.status != http.StatusUnauthorized {
		t.Fatalf("a key in the sub-request's own query: %d, want 401", a.status)
	}
	// Envoy's HTTP ext_authz: no forwarded fields, the client's target is
	// the sub-request's own.
	r = httptest.NewRequest(http.MethodGet, "/v1/x?api_key="+m.Secret, nil)
	if a := askVerifier(h, r); a.status != http.StatusOK {
		t.Fatalf("the client's own target: %d, want 200", a.status)
	}
}

func TestVerifyRefusals(t *testing.T) {
	h, app := testVerifier(t, VerifyRules{
		Headers: []string{"X-Api-Key"},
		Routes:  []VerifyRoute{{Paths: []string{"/admin/*"}, RequireScopes: []string{"admin"}}, {Methods: []string{"DELETE"}, RequireScopes: []string{"write"}}},
	}, "")
	m := mintFor(t, app, keystore.KeyRequest{Scopes: []string{"read"}})
	other := mintFor(t, app, keystore.KeyRequest{})
	disabled := mintFor(t, app, keystore.KeyRequest{})
	if _, _, err := app.keyring.ChangeDisabled(context.Background(), disabled.Key.ID, true); err != nil {
		t.Fatal(err)
	}
	revoked := mintFor(t, app, keystore.KeyRequest{})
	if _, err := app.keyring.Delete(context.Background(), keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, revoked.Key.ID); err != nil {
		t.Fatal(err)
	}
	unknown, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, m.Key.Created)
	bearer := func(k string) []string { return []string{"Authorization", "Bearer " + k} }
	cases := []struct {
		name      string
		r         *http.Request
		status    int
		challenge string
	}{
		{"no key", subRequest("GET", "/v1/"), 401, `Bearer realm="apikeys"`},
		{"unknown", subRequest("GET", "/v1/", bearer(unknown)...), 401, `Bearer realm="apikeys", error="invalid_token"`},
		{"not a key", subRequest("GET", "/v1/", bearer("sk-nope")...), 401, `Bearer realm="apikeys", error="invalid_token"`},
		{"disabled", subRequest("GET", "/v1/", bearer(disabled.Secret)...), 401, `Bearer realm="apikeys", error="invalid_token"`},
		{"revoked", subRequest("GET", "/v1/", bearer(revoked.Secret)...), 401, `Bearer realm="apikeys", error="invalid_token"`},
		{"two keys", subRequest("GET", "/v1/", "Authorization", "Bearer "+m.Secret, "X-Api-Key", other.Secret), 401, `Bearer realm="apikeys", error="invalid_request"`},
		{"out of scope by path", subRequest("GET", "/admin/users", bearer(m.Secret)...), 403, `Bearer realm="apikeys", error="insufficient_scope", scope="admin"`},
		{"out of scope, path in another case", subRequest("GET", "/ADMIN/users", bearer(m.Secret)...), 403, `Bearer realm="apikeys", error="insufficient_scope", scope="admin"`},
		{"out of scope, dot segments", subRequest("GET", "/v1/../admin/users", bearer(m.Secret)...), 403, `Bearer realm="apikeys", error="insufficient_scope", scope="admin"`},
		{"out of scope by method", subRequest("DELETE", "/v1/x", bearer(m.Secret)...), 403, `Bearer realm="apikeys", error="insufficient_scope", scope="write"`},
		{"in scope", subRequest("GET", "/v1/x", bearer(m.Secret)...), 200, ""},
		{"URI given twice", subRequest("GET", "/v1/x", "X-Forwarded-Uri", "/admin/x", "Authorization", "Bearer "+m.Secret), 400, ""},
		{"URI names disagree", subRequest("GET", "/v1/x", "X-Original-Uri", "/admin/x", "Authorization", "Bearer "+m.Secret), 400, ""},
		{"URI names agree", subRequest("GET", "/v1/x", "X-Original-Uri", "/v1/x", "Authorization", "Bearer "+m.Secret), 200, ""},
		{"absolute URI", subRequest("GET", "http://evil/admin/x", bearer(m.Secret)...), 400, ""},
		{"method names disagree", subRequest("GET", "/v1/x", "X-Original-Method", "DELETE", "Authorization", "Bearer "+m.Secret), 400, ""},
		{"bad method", subRequest("GE T", "/v1/x", bearer(m.Secret)...), 400, ""},
		// Paths some upstream reads as /admin/users.
		{"path parameters", subRequest("GET", "/admin;x/users", bearer(m.Secret)...), 400, ""},
		{"path parameters after dots", subRequest("GET", "/x/..;/admin/users", bearer(m.Secret)...), 400, ""},
		{"a backslash", subRequest("GET", "/admin%5cusers", bearer(m.Secret)...), 400, ""},
		{"encoded twice", subRequest("GET", "/admin%252fusers", bearer(m.Secret)...), 400, ""},
		{"a trailing dot", subRequest("GET", "/admin./users", bearer(m.Secret)...), 400, ""},
		{"a trailing space", subRequest("GET", "/admin%20/users", bearer(m.Secret)...), 400, ""},
		{"a NUL", subRequest("GET", "/admin%00/users", bearer(m.Secret)...), 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := askVerifier(h, c.r)
			if a.status != c.status {
				t.Fatalf("%d (%v), want %d", a.status, a.err, c.status)
			}
			if c.status == 200 {
				if a.err != nil {
					t.Fatal(a.err)
				}
			} else if a.err == nil || a.body != "" {
				t.Fatalf("a refusal is an error for the error routes, with no body of its own; got %v, %q", a.err, a.body)
			}
			if got := a.header.Get("WWW-Authenticate"); got != c.challenge {
				t.Fatalf("WWW-Authenticate %q, want %q", got, c.challenge)
			}
			if c.status != 200 && a.header.Get(FieldUser) != "" {
				t.Fatal("a refusal names the owner")
			}
			noKeyIn(t, a, m.Secret)
		})
	}
}

// Credits and limits as on apikey_auth: a route's cost, the proxy's
// stated cost, 429 with the RateLimit fields once spent.
func TestVerifyCharges(t *testing.T) {
	h, app := testVerifier(t, VerifyRules{CostHeader: "X-Apikeys-Cost", Routes: []VerifyRoute{{Paths: []string{"/big/*"}, Cost: ptr(int64(3))}}},
		`{"metered": {"credits": {"amount": 10}}, "rated": {"rates": [{"limit": 2, "window": "1h", "name": "hourly"}]}}`)
	metered := mintFor(t, app, keystore.KeyRequest{Plan: "metered"})
	ask := func(uri, key string, kv ...string) verifyAnswer {
		return askVerifier(h, subRequest("GET", uri, append([]string{"Authorization", "Bearer " + key}, kv...)...))
	}
	for i, want := range []string{"7", "4", "1"} {
		a := ask("/big/x", metered.Secret)
		if a.status != 200 || a.header.Get(FieldCreditsRemaining) != want {
			t.Fatalf("request %d: %d, credits left %q, want 200 and %s", i+1, a.status, a.header.Get(FieldCreditsRemaining), want)
		}
		if a.header.Get("Ratelimit-Policy") != `"credits";q=10;qu="credits"` {
			t.Fatalf("RateLimit-Policy %q", a.header.Get("Ratelimit-Policy"))
		}
	}
	if a := ask("/big/x", metered.Secret); a.status != http.StatusTooManyRequests || a.header.Get("Ratelimit") != `"credits";r=1` {
		t.Fatalf("3 credits for a cost of 3: %d, RateLimit %q; want 429", a.status, a.header.Get("Ratelimit"))
	}
	if a := ask("/big/x", metered.Secret, "X-Apikeys-Cost", "1"); a.status != 200 || a.header.Get(FieldCreditsRemaining) != "0" {
		t.Fatalf("a stated cost of 1 on the last credit: %d %q", a.status, a.header.Get(FieldCreditsRemaining))
	}
	if a := ask("/v1/", metered.Secret, "X-Apikeys-Cost", "0"); a.status != 200 {
		t.Fatalf("a stated cost of 0 with no credits left: %d", a.status)
	}
	for _, bad := range [][]string{{"X-Apikeys-Cost", "-1"}, {"X-Apikeys-Cost", "1e3"}, {"X-Apikeys-Cost", "1", "X-Apikeys-Cost", "0"}, {"X-Apikeys-Cost", "99999999999"}} {
		if a := ask("/v1/", metered.Secret, bad...); a.status != http.StatusBadRequest {
			t.Fatalf("stated cost %q: %d, want 400", bad, a.status)
		}
	}
	rated := mintFor(t, app, keystore.KeyRequest{Plan: "rated"})
	for range 2 {
		if a := ask("/v1/", rated.Secret); a.status != 200 || a.header.Get(FieldRateLimitRemaining) == "" {
			t.Fatalf("rated: %d %v", a.status, a.header)
		}
	}
	a := ask("/v1/", rated.Secret)
	if ra := a.header.Get("Retry-After"); a.status != http.StatusTooManyRequests || ra == "" || ra == "0" {
		t.Fatalf("third request in a window of 2: %d, Retry-After %q", a.status, ra)
	}
}

// The verifier and apikey_auth admit the same keys and refuse the others
// with the same status, fields and message: they run one admission.
func TestVerifyAgreesWithTheGate(t *testing.T) {
	h, app := testVerifier(t, VerifyRules{RequireScopes: []string{"read"}}, `{"metered": {"credits": {"amount": 2}}}`)
	g := &APIKeyGate{RequireScopes: []string{"read"}}
	if err := g.setUp(app, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	// Each its own key of the same kind, since they spend from the same
	// counters.
	keys := [][2]string{{"", ""}, {"sk-bad", "sk-bad"}}
	for _, req := range []keystore.KeyRequest{{Scopes: []string{"read"}}, {}, {Scopes: []string{"read"}, Plan: "metered"}} {
		keys = append(keys, [2]string{mintFor(t, app, req).Secret, mintFor(t, app, req).Secret})
	}
	for n, k := range keys {
		for i := range 3 { // the metered key runs out on its third try
			gr := httptest.NewRequest(http.MethodGet, "/v1/", nil)
			vr := subRequest("GET", "/v1/")
			if k[0] != "" {
				gr.Header.Set("Authorization", "Bearer "+k[0])
				vr.Header.Set("Authorization", "Bearer "+k[1])
			}
			ga := serveGate(g, gr)
			va := askVerifier(h, vr)
			if ga.status != va.status || ga.header.Get("WWW-Authenticate") != va.header.Get("WWW-Authenticate") ||
				ga.header.Get("Ratelimit") != va.header.Get("Ratelimit") || (ga.err == nil) != (va.err == nil) ||
				(ga.err != nil && refusalMessage(ga.err) != refusalMessage(va.err)) {
				t.Fatalf("key %d, try %d: the gate says %d %v %v, the verifier %d %v %v", n, i, ga.status, ga.header, ga.err, va.status, va.header, va.err)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// refusalMessage is the message of a refusal, {err.message}.
func refusalMessage(err error) string {
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) {
		return err.Error()
	}
	return he.Err.Error()
}
