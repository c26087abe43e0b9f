package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// benchProvider returns a provider over a bbolt store holding n keys, and
// one of those keys.
func benchProvider(b *testing.B, n int, keep bool) (*APIKeyAuth, string) {
	b.Helper()
	s, err := keystore.OpenBolt(filepath.Join(b.TempDir(), "keys.db"), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	kr := keystore.NewKeyring(s, keystore.Options{})
	b.Cleanup(func() { _ = kr.Close(); _ = s.Close() })
	var secret string
	for i := range n {
		m, err := kr.Mint(context.Background(), fmt.Sprintf("user%d", i%100), keystore.MintOptions{Title: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		secret = m.Secret
	}
	p := &APIKeyAuth{KeepCredentials: keep, app: &App{keyring: kr}, challenge: `Bearer realm="apikeys"`}
	return p, secret
}

func BenchmarkAuthenticate(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		for _, keep := range []bool{true, false} {
			b.Run(fmt.Sprintf("keys=%d/keep_credentials=%v", n, keep), func(b *testing.B) {
				p, secret := benchProvider(b, n, keep)
				w := httptest.NewRecorder()
				r := httptest.NewRequest(http.MethodGet, "/v1/", nil)
				bearer := "Bearer " + secret
				r.Header.Set("Authorization", bearer)
				b.ReportAllocs()
				for b.Loop() {
					if !keep {
						r.Header["Authorization"] = []string{bearer}
					}
					if _, ok, err := p.Authenticate(w, r); !ok || err != nil {
						b.Fatal(ok, err)
					}
				}
			})
		}
	}
}

// BenchmarkBasicAuthCached is the baseline: Caddy's own basic_auth with
// its hash cache on, as the Caddyfile directive configures it.
func BenchmarkBasicAuthCached(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	ba := &caddyauth.HTTPBasicAuth{
		HashRaw:     caddyconfig.JSONModuleObject(caddyauth.BcryptHash{}, "algorithm", "bcrypt", nil),
		AccountList: []caddyauth.Account{{Username: "alice", Password: string(hash)}},
		HashCache:   new(caddyauth.Cache),
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := ba.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/v1/", nil)
	r.SetBasicAuth("alice", "pw")
	if _, ok, _ := ba.Authenticate(w, r); !ok { // fill the cache
		b.Fatal("basic auth refused")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := ba.Authenticate(w, r); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
