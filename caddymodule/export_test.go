package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Hooks for the tests of package caddymodule_test, which use only what
// another project's code could.

// StartApp provisions an App from JSON in its own Caddy context, and
// returns it with the function that stops it.
func StartApp(t *testing.T, config string) (*App, func()) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	var app App
	if err := json.Unmarshal([]byte(config), &app); err != nil {
		t.Fatal(err)
	}
	if err := app.Provision(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	return &app, func() { cancel(); _ = app.Cleanup() }
}

// MintForTest mints a key for the service owner on app's keyring.
func MintForTest(t *testing.T, app *App, owner string) string {
	t.Helper()
	m, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service(owner), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return m.Secret
}

// AuthenticateForTest reports whether apikey_auth on app lets a request
// presenting secret through to an upstream that answers, spending its
// cost.
func AuthenticateForTest(t *testing.T, app *App, secret string) bool {
	t.Helper()
	g := &APIKeyGate{}
	if err := g.setUp(app, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/v1/", nil)
	r.Header.Set("Authorization", "Bearer "+secret)
	return serveGate(g, r).admitted()
}
