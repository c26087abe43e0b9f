package caddymodule

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// BenchmarkWorkingSet checks keys drawn from 10⁶ stored keys through the
// default cache of 10⁵, uniformly (most checks miss and read the store)
// and Zipf-distributed (s = 1.1: a few keys carry most requests), and
// reports the check's p50 and p99 (each timed alone, so including about
// 50 ns of clock reads), the share answered from the cache and the store
// reads per second. A first pass of as many draws fills the cache.
func BenchmarkWorkingSet(b *testing.B) {
	const n = 1_000_000
	fixture := mintedStore(b, n)
	for _, dist := range []string{"uniform", "zipf"} {
		b.Run(dist, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			draw := func() int { return rng.IntN(n) }
			if dist == "zipf" {
				z := rand.NewZipf(rng, 1.1, 1, n-1)
				perm := rng.Perm(n) // hot keys anywhere in the store
				draw = func() int { return perm[z.Uint64()] }
			}
			s, err := boltstore.Open(fixture.path, time.Second)
			if err != nil {
				b.Fatal(err)
			}
			var reads atomic.Int64
			kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour,
				Observer: func(op string, _ time.Duration, _ error) {
					if op == "key_by_hash" {
						reads.Add(1)
					}
				}})
			defer func() { _ = kr.Close(); _ = s.Close() }()
			m, err := newMetrics(prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			g := benchGate(&App{keyring: kr, metrics: m})
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/v1/", nil)
			check := func() {
				r.Header.Set("Authorization", "Bearer "+fixture.secrets[draw()])
				if _, k, _, err := g.admitRequest(w, r); k == nil || err != nil {
					b.Fatal(k, err)
				}
			}
			for range 200_000 { // fill the cache
				check()
			}
			reads.Store(0)
			var took []time.Duration
			start := time.Now()
			for b.Loop() {
				t0 := time.Now()
				check()
				took = append(took, time.Since(t0))
			}
			elapsed := time.Since(start)
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds()), "p99-ns")
			b.ReportMetric(100*(1-float64(reads.Load())/float64(len(took))), "%cached")
			b.ReportMetric(float64(reads.Load())/elapsed.Seconds(), "reads/s")
		})
	}
}
