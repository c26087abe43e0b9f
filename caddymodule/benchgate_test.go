package caddymodule

import (
	"net/http"
	"testing"

	"go.uber.org/zap"
)

// benchGate is an apikey_auth handler at cost 1 that keeps credentials
// (benchmarks reuse their request).
func benchGate(app *App) *APIKeyGate {
	g := &APIKeyGate{KeepCredentials: true}
	if err := g.setUp(app, zap.NewNop()); err != nil {
		panic(err)
	}
	return g
}

// benchAdmit admits r as the gate does before it passes a request on,
// and spends its credits as for an answered request.
func benchAdmit(b *testing.B, g *APIKeyGate, w http.ResponseWriter, r *http.Request) {
	_, k, v, err := g.admitRequest(w, r)
	if k == nil || err != nil || !v.Allowed {
		b.Fatal(k, v, err)
	}
	v.Charge.Commit()
}
