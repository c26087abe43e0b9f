package integration

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// BenchmarkUnknownKeyFlood runs Caddyfile.cluster (one gateway, a
// three-member etcd cluster, all on loopback) and measures, in one run:
//
//   - idle: a legitimate client (from 127.0.0.2) using a valid key at a
//     steady rate, alone;
//   - flood: the same, while one address (127.0.0.1) sends distinct
//     well-formed unknown keys at a fixed rate, with the default
//     unknown_key_budget;
//   - flood, budget off: the same after reloading with
//     unknown_key_budget off.
//
// It reports the store reads per second each flood caused (the
// key_by_hash operations the gateway timed), the bound the budget sets,
// and the legitimate client's p50/p99 latency in each phase. It runs
// once whatever b.N:
//
//	go test ./integration -run '^$' -bench UnknownKeyFlood -benchtime 1x -v
//
// APIKEYS_FLOOD_RATE (requests/s, default 1000), APIKEYS_FLOOD_SECONDS
// (per phase, default 10) and APIKEYS_FLOOD_MEMBERS (etcd members,
// default 3) change the load.
func BenchmarkUnknownKeyFlood(b *testing.B) {
	floodRate := testutil.EnvInt(b, "APIKEYS_FLOOD_RATE", 1000)
	phase := time.Duration(testutil.EnvInt(b, "APIKEYS_FLOOD_SECONDS", 10)) * time.Second
	c := etcdtest.Start(b, testutil.EnvInt(b, "APIKEYS_FLOOD_MEMBERS", 3))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	ports := holdPorts(b, 2)
	clusterFile := clusterCopy(b, ports)
	rc := startBinary(b, clusterFile, b.TempDir(), ports, clusterEnv(ports, c.Endpoints(), upstream.URL)...)
	defer rc.Stop()
	base, admin := "http://"+ports[0].Addr, ports[1].Addr
	metrics := "http://" + admin + "/metrics"
	mustCLI(b, "alicepw\n", "--address", admin, "user", "add", "alice")
	key := decodeCreated(b, post(b, base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`)).APIKey

	// The legitimate client comes from another address than the flood.
	legit := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	flood := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	get := func(c *http.Client, k string) (int, time.Duration) {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/x", nil)
		req.Header.Set("X-Api-Key", k)
		start := time.Now()
		res, err := c.Do(req)
		if err != nil {
			b.Error(err)
			return 0, 0
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, time.Since(start)
	}
	if s, _ := get(legit, key); s != 200 {
		b.Fatalf("legitimate key: %d", s)
	}
	type result struct {
		lat                 []time.Duration
		reads, overBudget   float64
		flooded, floodSent  int64
		legitFailed         int64
		floodReadsPerSecond float64
		maxStale            float64 // seconds, sampled
	}
	run := func(withFlood bool) result {
		var r result
		readsBefore := metricValue(b, metrics, `caddy_apikeys_store_operation_duration_seconds_count{operation="key_by_hash"}`)
		overBefore := metricValue(b, metrics, `caddy_apikeys_validations_total{result="over_budget"}`)
		ctx, cancel := context.WithTimeout(context.Background(), phase)
		defer cancel()
		var wg sync.WaitGroup
		var sent, refused atomic.Int64
		if withFlood {
			const workers = 16
			for range workers {
				wg.Go(func() {
					tick := time.NewTicker(time.Duration(workers) * time.Second / time.Duration(floodRate))
					defer tick.Stop()
					for {
						select {
						case <-ctx.Done():
							return
						case <-tick.C:
						}
						unknown, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
						s, _ := get(flood, unknown)
						sent.Add(1)
						if s == 401 {
							refused.Add(1)
						}
					}
				})
			}
		}
		// How far behind the watch falls (sampled every 100 ms).
		wg.Go(func() {
			for ctx.Err() == nil {
				r.maxStale = max(r.maxStale, metricValue(b, metrics, "caddy_apikeys_cache_staleness_seconds"))
				time.Sleep(100 * time.Millisecond)
			}
		})
		// The legitimate client: a request every 5 ms.
		tick := time.NewTicker(5 * time.Millisecond)
		for done := false; !done; {
			select {
			case <-ctx.Done():
				done = true
			case <-tick.C:
				s, d := get(legit, key)
				if s != 200 {
					r.legitFailed++
				}
				r.lat = append(r.lat, d)
			}
		}
		tick.Stop()
		wg.Wait()
		r.reads = metricValue(b, metrics, `caddy_apikeys_store_operation_duration_seconds_count{operation="key_by_hash"}`) - readsBefore
		r.overBudget = metricValue(b, metrics, `caddy_apikeys_validations_total{result="over_budget"}`) - overBefore
		r.floodSent, r.flooded = sent.Load(), refused.Load()
		r.floodReadsPerSecond = r.reads / phase.Seconds()
		slices.Sort(r.lat)
		return r
	}

	idle := run(false)
	on := run(true)
	cfg := strings.Replace(string(mustReadTB(b, clusterFile)), "\tapikeys {\n", "\tapikeys {\n\t\tunknown_key_budget off\n", 1)
	loadConfig(b, admin, cfg)
	legit.CloseIdleConnections()
	flood.CloseIdleConnections()
	get(legit, key) // a new config has a new cache
	off := run(true)

	p := func(r result, q float64) float64 { return float64(percentile(r.lat, q)) / 1e6 }
	bound := (100 + 10*phase.Seconds()) / phase.Seconds() // default burst 100, rate 10/s
	b.Logf("flood of %d unknown keys/s from one address, %v per phase, %d etcd members, on a 2-core machine shared with etcd and the clients:", floodRate, phase, len(c.Endpoints()))
	b.Logf("| phase | flood sent (401) | store reads/s | over_budget | legit p50 ms | legit p99 ms | p99 / idle | legit failures | max cache staleness s |")
	b.Logf("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, row := range []struct {
		name string
		r    result
	}{{"idle", idle}, {"flood, budget on (default)", on}, {"flood, budget off", off}} {
		b.Logf("| %s | %d (%d) | %.1f | %.0f | %.3f | %.3f | %.2f | %d | %.2f |", row.name, row.r.floodSent, row.r.flooded,
			row.r.floodReadsPerSecond, row.r.overBudget, p(row.r, 0.5), p(row.r, 0.99), p(row.r, 0.99)/p(idle, 0.99), row.r.legitFailed, row.r.maxStale)
	}
	b.Logf("budget bound on store reads: %.1f/s over %v (burst 100 + 10/s)", bound, phase)
	b.ReportMetric(on.floodReadsPerSecond, "reads/s")
	b.ReportMetric(off.floodReadsPerSecond, "reads/s-nobudget")
	b.ReportMetric(p(on, 0.99)/p(idle, 0.99), "p99-ratio")
	b.ReportMetric(p(off, 0.99)/p(idle, 0.99), "p99-ratio-nobudget")
}

func mustReadTB(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
