package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// inAPIShape is the shipped Caddyfiles' handle_errors body for msg, as
// Caddy's respond fills it in (placeholders are not escaped).
func inAPIShape(msg string) string { return `{"success": false, "error": "` + msg + `"}` }

// wantAPIShape fails unless the shipped handle_errors body for msg is
// valid JSON saying msg.
func wantAPIShape(t *testing.T, msg string) {
	t.Helper()
	var body struct {
		Success *bool  `json:"success"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal([]byte(inAPIShape(msg)), &body); err != nil || body.Success == nil || *body.Success || body.Error != msg {
		t.Errorf("refusal %q in the API's shape: %s is not that JSON (%v)", msg, inAPIShape(msg), err)
	}
}

// TestGateRefusalsAreErrors: every refusal of apikey_auth (no key, a bad
// key, two keys, a missing scope, a rate limit, spent credits, a store
// failure while charging) is an error with its status for the server's
// error routes, writes nothing itself, keeps its header fields, and has a
// message that the shipped handle_errors turns into valid JSON.
func TestGateRefusalsAreErrors(t *testing.T) {
	dir := t.TempDir()
	app, err := provisionApp(t, `{"store": `+storeJSON(filepath.Join(dir, "k.db"))+`,
		"plans": {"rated": {"rates": [{"limit": 1, "window": "1h", "name": "burst"}]},
			"metered": {"credits": {"amount": 8}}}}`)
	if err != nil {
		t.Fatal(err)
	}
	g := &APIKeyGate{Headers: []string{"X-Api-Key"}, RequireScopes: []string{"write"}}
	if err := g.setUp(app, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	mint := func(plan string) string {
		m, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("svc"), Operator: true},
			keystore.KeyRequest{Scopes: []string{"write"}, Plan: plan})
		if err != nil {
			t.Fatal(err)
		}
		return m.Secret
	}
	unscoped, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("svc"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rated, metered, failing := mint("rated"), mint("metered"), mint("metered")
	withKey := func(key ...string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/v1/", nil)
		if len(key) > 0 {
			r.Header.Set("Authorization", "Bearer "+key[0])
		}
		if len(key) > 1 {
			r.Header.Set("X-Api-Key", key[1])
		}
		return r
	}
	// What the refused requests need first: a spent window, spent credits
	// (8, one at a time), a key cached with its first block of one credit.
	for _, r := range []*http.Request{withKey(rated), withKey(failing)} {
		if a := serveGate(g, r); !a.admitted() {
			t.Fatalf("setup: refused %d", a.status)
		}
	}
	for range 8 {
		if a := serveGate(g, withKey(metered)); !a.admitted() {
			t.Fatalf("setup: refused %d", a.status)
		}
	}

	for _, c := range []struct {
		name    string
		req     func() *http.Request
		status  int
		msg     string
		headers map[string]string // field -> prefix of its value
	}{
		{"no key", func() *http.Request { return withKey() }, 401, msgKeyRequired,
			map[string]string{"WWW-Authenticate": `Bearer realm="apikeys"`}},
		{"a bad key", func() *http.Request { return withKey("sk-not-a-key") }, 401, msgKeyRequired,
			map[string]string{"WWW-Authenticate": `Bearer realm="apikeys", error="invalid_token"`}},
		{"two keys", func() *http.Request { return withKey(rated, metered) }, 401, msgTwoKeys,
			map[string]string{"WWW-Authenticate": `Bearer realm="apikeys", error="invalid_request"`}},
		{"a missing scope", func() *http.Request { return withKey(unscoped.Secret) }, 403, "the API key lacks the scope 'write'",
			map[string]string{"WWW-Authenticate": `Bearer realm="apikeys", error="insufficient_scope", scope="write"`}},
		{"a rate limit", func() *http.Request { return withKey(rated) }, 429, "rate limit 'burst' exceeded: at most 1 requests per 1h",
			map[string]string{"Retry-After": "", "RateLimit": `"burst";r=0;t=`, "RateLimit-Policy": `"burst";q=1;w=3600`}},
		{"spent credits", func() *http.Request { return withKey(metered) }, 429, "the key's credits are spent",
			map[string]string{"RateLimit": `"credits";r=0`, "RateLimit-Policy": `"credits";q=8;qu="credits"`}},
		{"a store failure while charging", func() *http.Request {
			if err := app.keyring.Store().Close(); err != nil {
				t.Fatal(err)
			}
			return withKey(failing)
		}, 503, wire.Unavailable.Msg, map[string]string{"Retry-After": "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := serveGate(g, c.req())
			if a.admitted() {
				t.Fatal("admitted")
			}
			var he caddyhttp.HandlerError
			if !errors.As(a.err, &he) || he.StatusCode != c.status || he.Err == nil || he.Err.Error() != c.msg {
				t.Fatalf("refusal %v; want an error with status %d and message %q", a.err, c.status, c.msg)
			}
			if a.wrote {
				t.Errorf("the gate wrote the answer itself: the error routes cannot shape it")
			}
			for field, prefix := range c.headers {
				if v := a.header.Get(field); v == "" || !strings.HasPrefix(v, prefix) {
					t.Errorf("%s: %q, want %q…", field, v, prefix)
				}
			}
			wantAPIShape(t, he.Err.Error())
		})
	}
}

// TestRefusalMessagesNeedNoJSONEscaping builds every message apikey_auth
// refuses with (keys, scopes, limits, bodies), from the most awkward names
// a config can give a rate limit or a scope: none holds a character that a JSON string would
// need escaped, so none is changed on the way (jsonSafe).
func TestRefusalMessagesNeedNoJSONEscaping(t *testing.T) {
	var allowed strings.Builder // printable ASCII but quotes and backslashes
	for c := byte(0x21); c < 0x7f; c++ {
		if c != '"' && c != '\\' {
			allowed.WriteByte(c)
		}
	}
	name := allowed.String()
	const maxScopeLen = 64 // keystore's bound on a scope name
	scopes := []string{name[:maxScopeLen], name[len(name)-maxScopeLen:]}
	for _, s := range scopes {
		if err := keystore.CheckScope(s); err != nil {
			t.Fatalf("the test's scope is not one a config can have: %v", err)
		}
	}
	if _, err := (&App{Plans: map[string]*PlanConfig{"p": {Rates: []RateConfig{{Name: name, Limit: 1, Window: caddy.Duration(time.Minute)}}}}}).plans(); err != nil {
		t.Fatalf("the test's rate name is not one a config can have: %v", err)
	}
	rec := httptest.NewRecorder()
	now := time.Now()
	msgs := []string{msgKeyRequired, msgTwoKeys, wire.Unavailable.Msg,
		limitedMessage(keystore.Verdict{Reason: keystore.RateLimited, Name: name, Quota: 1 << 62, Window: 10000 * time.Hour}, now),
		limitedMessage(keystore.Verdict{Reason: keystore.OutOfCredits}, now),
		limitedMessage(keystore.Verdict{Reason: keystore.OutOfCredits, NextRefill: now.Add(720 * time.Hour)}, now),
	}
	// (The body's refusals: presented's TestBodyMessagesNeedNoJSONEscaping.)
	for _, s := range scopes {
		var he caddyhttp.HandlerError
		if !errors.As(scopeRefusal(rec.Header(), "challenge", s), &he) {
			t.Fatal("a scope refusal is not an error for the error routes")
		}
		msgs = append(msgs, he.Err.Error())
	}
	for _, m := range msgs {
		if jsonSafe(m) != m {
			t.Errorf("message %q is changed to be JSON-safe: write it without quotes, backslashes or control characters", m)
		}
		wantAPIShape(t, m)
	}
}

// FuzzJSONSafe: whatever a refusal message holds, the shipped
// handle_errors body made of it is valid JSON.
func FuzzJSONSafe(f *testing.F) {
	for _, s := range []string{"", `rate limit "x" exceeded`, "a\\b", "tab\there", "\xff\xfe", "é\u2028\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		safe := jsonSafe(s)
		var body struct{ Error string }
		if err := json.Unmarshal([]byte(inAPIShape(safe)), &body); err != nil || body.Error != safe {
			t.Fatalf("jsonSafe(%q) = %q: %s is not valid JSON saying it (%v)", s, safe, inAPIShape(safe), err)
		}
	})
}
