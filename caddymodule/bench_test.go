package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// benchStore is a bbolt store holding n keys, and some of those keys.
type benchStore struct {
	path    string
	secrets []string
}

var (
	benchStoresMu sync.Mutex
	benchStores   = map[int]*benchStore{}
)

// storeWithKeys returns a store with n keys, built once per process: from
// $APIKEYS_BENCH_STORE_<n> (a file made by bench/loadkeys, with some of
// its keys in <file>.keys) when set, as bench/run.sh does, else by
// minting (mintedStore).
func storeWithKeys(b *testing.B, n int) *benchStore {
	src := os.Getenv(fmt.Sprintf("APIKEYS_BENCH_STORE_%d", n))
	if src == "" {
		return mintedStore(b, n)
	}
	benchStoresMu.Lock()
	defer benchStoresMu.Unlock()
	if s, ok := benchStores[-n]; ok {
		return s
	}
	dir, err := os.MkdirTemp("", "apikeys-bench-")
	if err != nil {
		b.Fatal(err)
	}
	s := &benchStore{path: filepath.Join(dir, "keys.db")}
	data, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(s.path, data, 0o600)
	}
	keys, err2 := os.ReadFile(src + ".keys")
	if err = errors.Join(err, err2); err != nil {
		b.Fatal(err)
	}
	s.secrets = strings.Fields(string(keys))
	benchStores[-n] = s
	return s
}

// mintedStore returns a store with n keys minted by 256 callers for 1 000
// owners, and every key's secret, built once per process.
func mintedStore(b *testing.B, n int) *benchStore {
	benchStoresMu.Lock()
	defer benchStoresMu.Unlock()
	if s, ok := benchStores[n]; ok {
		return s
	}
	dir, err := os.MkdirTemp("", "apikeys-bench-")
	if err != nil {
		b.Fatal(err)
	}
	s := &benchStore{path: filepath.Join(dir, "keys.db"), secrets: make([]string, n)}
	b.Logf("minting %d keys for the benchmark (set APIKEYS_BENCH_STORE_%d to reuse a store)", n, n)
	st, err := boltstore.Open(s.path, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	kr := keystore.NewKeyring(st, keystore.Options{})
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				m, err := kr.Mint(context.Background(), keystore.Actor{Owner: keystore.Service(fmt.Sprintf("user%d", i%1000)), Operator: true}, keystore.KeyRequest{Title: "bench"})
				if err != nil {
					b.Error(err)
					return
				}
				s.secrets[i-1] = m.Secret
			}
		})
	}
	wg.Wait()
	_ = kr.Close()
	_ = st.Close()
	benchStores[n] = s
	return s
}

// BenchmarkAuthenticate is apikey_auth's admission of a cached key (find,
// parse, checksum, SHA-256, cache lookup, last-used record, and with a plan
// the rate limit and credits, spent), at two store sizes, and with a plan
// of one rate limit and credits (what a key with limits costs more per
// request). BenchmarkRoute has the rest of a request's way through Caddy.
func BenchmarkAuthenticate(b *testing.B) {
	for _, tc := range []struct {
		n    int
		plan bool
	}{{1_000, false}, {1_000, true}, {1_000_000, false}} {
		name := fmt.Sprintf("keys=%d", tc.n)
		if tc.plan {
			name += "/plan=rate+credits"
		}
		b.Run(name, func(b *testing.B) {
			fixture := storeWithKeys(b, tc.n)
			s, err := boltstore.Open(fixture.path, time.Second)
			if err != nil {
				b.Fatal(err)
			}
			opts := keystore.Options{FlushInterval: time.Hour}
			if tc.plan {
				meter, err := keystore.NewMeter(s, keystore.MeterOptions{Ledger: filepath.Join(b.TempDir(), "ledger")})
				if err != nil {
					b.Fatal(err)
				}
				defer meter.Close()
				opts.Meter = meter
				opts.Policy = keystore.Policy{DefaultPlan: "bench", Plans: map[string]*keystore.Plan{"bench": {Name: "bench",
					Rates:   []keystore.Rate{{Name: "r", Limit: 1 << 40, Window: time.Minute}},
					Credits: &keystore.Credits{Amount: 1 << 40}}}}
			}
			kr := keystore.NewKeyring(s, opts)
			defer func() { _ = kr.Close(); _ = s.Close() }()
			m, err := newMetrics(prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			g := benchGate(&App{keyring: kr, metrics: m})
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/v1/", nil)
			r.Header.Set("Authorization", "Bearer "+fixture.secrets[0])
			b.ReportAllocs()
			for b.Loop() {
				benchAdmit(b, g, w, r)
			}
		})
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

// BenchmarkCreateAPIKey measures create_api_key through the handler with
// HS256-JWT credentials and 64 concurrent callers; every key is committed
// before its response.
func BenchmarkCreateAPIKey(b *testing.B) {
	const secret = "bench-secret-0123456789abcdef0123456789"
	app, err := provisionAppB(b, `{"store": `+storeJSON(filepath.Join(b.TempDir(), "k.db"))+`, "jwt": [{"secrets": ["`+secret+`"], "accept_any_audience": true}]}`)
	if err != nil {
		b.Fatal(err)
	}
	app.audit = zap.NewNop()
	h := &APIHandler{}
	if err := h.setUp(app, zap.NewNop()); err != nil {
		b.Fatal(err)
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "minter", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		b.Fatal(err)
	}
	body := `{"auth": "` + token + `", "title": "bench"}`
	b.SetParallelism(32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/api/create_api_key", strings.NewReader(body))
			if err := h.ServeHTTP(w, r, nil); err != nil || w.Code != http.StatusOK {
				b.Errorf("%d %s %v", w.Code, w.Body.String(), err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

// provisionAppB is provisionApp for benchmarks.
func provisionAppB(b *testing.B, config string) (*App, error) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	var app App
	if err := json.Unmarshal([]byte(config), &app); err != nil {
		b.Fatal(err)
	}
	err := app.Provision(ctx)
	b.Cleanup(func() {
		cancel()
		_ = app.Cleanup()
	})
	return &app, err
}
