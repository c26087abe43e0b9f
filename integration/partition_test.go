package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/etcdstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// defaultCut is how long TestGatewayCutOffFromEtcd cuts its gateway off
// unless APIKEYS_CUT says otherwise: long enough past max_stale (15s) to
// see memory and goroutines level off, short enough for every CI run.
const defaultCut = 40 * time.Second

// cutLength is APIKEYS_CUT (a Go duration, e.g. 2m for a two-minute cut) or
// defaultCut.
func cutLength(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("APIKEYS_CUT")
	if v == "" {
		return defaultCut
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 20*time.Second {
		t.Fatalf("APIKEYS_CUT=%q: want a duration of at least 20s (past max_stale)", v)
	}
	return d
}

// timed is one request of the load: when it was sent, how long its
// answer took, and the answer.
type timed struct {
	sent       time.Time
	took       time.Duration
	status     int
	retryAfter string
	body       string
	err        error
}

func (r timed) answered() time.Time { return r.sent.Add(r.took) }

// loadClient keeps a connection alive for each of the load's clients.
var loadClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}

// send makes one request, for goroutines other than the test's: it
// records a failure to get an answer instead of failing the test.
func send(method, url, body string, headers ...string) timed {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return timed{sent: time.Now(), err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	sent := time.Now()
	res, err := loadClient.Do(req)
	if err != nil {
		return timed{sent: sent, took: time.Since(sent), err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return timed{sent: sent, took: time.Since(sent), status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), body: string(b), err: err}
}

// timeline is the requests of one client of the load.
type timeline struct {
	mu sync.Mutex
	rs []timed
}

func (l *timeline) add(r timed) {
	l.mu.Lock()
	l.rs = append(l.rs, r)
	l.mu.Unlock()
}

func (l *timeline) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.rs)
}

func (l *timeline) all() []timed {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.rs)
}

// mintedKey is the api_key of a create_api_key answer, "" if none.
func mintedKey(body string) string {
	var env struct {
		Result struct {
			APIKey string `json:"api_key"`
		} `json:"result"`
	}
	_ = json.Unmarshal([]byte(body), &env)
	return env.Result.APIKey
}

// isFailureJSON reports whether body is the API's {"success": false,
// "error": "…"}.
func isFailureJSON(body string) bool {
	var f struct {
		Success *bool  `json:"success"`
		Error   string `json:"error"`
	}
	return json.Unmarshal([]byte(body), &f) == nil && f.Success != nil && !*f.Success && f.Error != ""
}

// processUsage is a gateway's resident memory and goroutines at a moment.
type processUsage struct {
	rss        int64 // bytes, VmRSS of /proc/<pid>/status
	goroutines int   // go_goroutines of the admin endpoint's /metrics
}

func (u processUsage) String() string {
	return fmt.Sprintf("%.1f MiB, %d goroutines", float64(u.rss)/(1<<20), u.goroutines)
}

func (g *clusterGateway) usage(t *testing.T) processUsage {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", g.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var u processUsage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			u.rss = kb << 10
		}
	}
	u.goroutines = int(metricValue(t, "http://"+g.admin+"/metrics", "go_goroutines"))
	return u
}

// peak is the largest memory and goroutine count among us.
func peak(us []processUsage) processUsage {
	var p processUsage
	for _, u := range us {
		p.rss, p.goroutines = max(p.rss, u.rss), max(p.goroutines, u.goroutines)
	}
	return p
}

// durations are the took of rs.
func durations(rs []timed) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = r.took
	}
	slices.Sort(out)
	return out
}

// spread says p50, p99 and max of sorted durations.
func spread(sorted []time.Duration) string {
	if len(sorted) == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %v, p99 %v, max %v (n=%d)", percentile(sorted, 0.5).Round(10*time.Microsecond),
		percentile(sorted, 0.99).Round(10*time.Microsecond), sorted[len(sorted)-1].Round(10*time.Microsecond), len(sorted))
}

// TestGatewayCutOffFromEtcd runs Caddyfile.cluster on two gateways over a
// three-member etcd cluster; B reaches every member through a fault proxy
// (testutil.FaultProxy), A directly. Under load on B, it measures what
// docs/cluster.md ("When etcd is cut off, not down") states:
//
//   - +200 ms each way between B and etcd, for longer than max_stale:
//     checking cached keys stays as fast (p99 within 2× of normal, measured
//     in the same run) and never reads etcd; minting is slower and never
//     fails.
//   - A black hole between B and etcd (no byte passes, no connection is
//     reset) for APIKEYS_CUT (default 40s): B answers cached keys until
//     max_stale and refuses them (401) after it, refuses a key revoked on
//     A within max_stale + 1s, refuses unknown keys throughout, answers
//     mints 503 JSON with Retry-After within request_timeout + 1s, and its
//     memory and goroutines level off.
//   - The cut heals: B trusts its cache again within 10s, without a
//     restart; the key revoked during the cut stays refused, keys minted
//     on A during it work on B, every mint acknowledged anywhere in the
//     test works on both gateways, and once the load ends B has the
//     goroutines it had at rest before it.
func TestGatewayCutOffFromEtcd(t *testing.T) {
	cutFor := cutLength(t)
	const maxStale = 15 * time.Second // Caddyfile.cluster's
	if !strings.Contains(string(mustRead(t, filepath.Join(repoRoot(t), "Caddyfile.cluster"))), "max_stale 15s") {
		t.Fatal("Caddyfile.cluster no longer sets max_stale 15s: update this test")
	}
	const requestTimeout = etcdstore.DefaultRequestTimeout // Caddyfile.cluster leaves it
	c := etcdtest.Start(t, 3)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	var proxies []*testutil.FaultProxy
	var through []string
	for _, ep := range c.Endpoints() {
		p := testutil.NewFaultProxy(t, strings.TrimPrefix(ep, "http://"))
		proxies = append(proxies, p)
		through = append(through, "http://"+p.Addr())
	}
	each := func(f func(*testutil.FaultProxy)) {
		for _, p := range proxies {
			f(p)
		}
	}
	a := startClusterGateway(t, "A", c, upstream.URL)
	b := startClusterGatewayAt(t, "B", through, upstream.URL)
	mustCLI(t, "alicepw\n", "--address", a.admin, "user", "add", "alice")
	auth := `{"username": "alice", "password": "alicepw"}`
	mintBody := `{"auth": ` + auth + `}`
	bMetrics := "http://" + b.admin + "/metrics"
	const reads = `caddy_apikeys_store_operation_duration_seconds_count{operation="key_by_hash"}`
	staleness := func() time.Duration {
		return time.Duration(metricValue(t, bMetrics, "caddy_apikeys_cache_staleness_seconds") * float64(time.Second))
	}

	// Keys B verified, so cached there, and one of them to revoke on A
	// during the cut.
	var known []string
	for range 20 {
		known = append(known, a.mint(t, auth).APIKey)
	}
	doomed := a.mint(t, auth)
	testutil.Eventually(t, 15*time.Second, "B answers every key from its cache", func() bool {
		before := metricValue(t, bMetrics, reads)
		for _, k := range append(slices.Clone(known), doomed.APIKey) {
			if b.status(t, k) != http.StatusOK {
				return false
			}
		}
		return metricValue(t, bMetrics, reads) == before
	})

	// Every mint acknowledged with 200 (on B, or on A), to check at the end.
	var ackMu sync.Mutex
	var acked []string
	ack := func(key string) {
		ackMu.Lock()
		acked = append(acked, key)
		ackMu.Unlock()
	}

	// steady checks known keys on B one after another for d while minting
	// there once a second, and returns the checks and the mints; every
	// one must succeed.
	steady := func(what string, d time.Duration) (checks, mints []timed) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var failed timeline
		var minter sync.WaitGroup
		minter.Go(func() {
			for ctx.Err() == nil {
				r := send(http.MethodPost, b.base+"/api/create_api_key", mintBody)
				if k := mintedKey(r.body); r.status == http.StatusOK && k != "" {
					ack(k)
					mints = append(mints, r)
				} else {
					failed.add(r)
				}
				select { // one a second, or back to back if slower
				case <-ctx.Done():
				case <-time.After(time.Until(r.sent.Add(time.Second))):
				}
			}
		})
		for i := 0; ctx.Err() == nil; i++ {
			r := send(http.MethodGet, b.base+"/v1/x", "", "X-Api-Key", known[i%len(known)])
			if r.status == http.StatusOK {
				checks = append(checks, r)
			} else {
				failed.add(r)
			}
			time.Sleep(2 * time.Millisecond) // pacing
		}
		minter.Wait()
		if f := failed.all(); len(f) > 0 {
			t.Errorf("%s: %d requests failed, first: %d %q %v", what, len(f), f[0].status, f[0].body, f[0].err)
		}
		return checks, mints
	}

	if !t.Run("200 ms more each way to etcd", func(t *testing.T) {
		normalChecks, normalMints := steady("normal", 10*time.Second)
		each(func(p *testutil.FaultProxy) { p.Delay(200 * time.Millisecond) })
		before := metricValue(t, bMetrics, reads)
		// Longer than max_stale: the cache stays trusted on the watch's
		// word, not on what it knew before.
		slowChecks, slowMints := steady("+200ms", maxStale+5*time.Second)
		readsDuring := metricValue(t, bMetrics, reads) - before
		staleDuring := staleness()
		each((*testutil.FaultProxy).Pass)

		normal, slow := durations(normalChecks), durations(slowChecks)
		t.Logf("checks of cached keys on B, normal: %s", spread(normal))
		t.Logf("checks of cached keys on B, +200ms each way: %s; %v etcd reads; cache staleness at the end %v",
			spread(slow), readsDuring, staleDuring.Round(time.Millisecond))
		t.Logf("mints on B, normal: %s", spread(durations(normalMints)))
		t.Logf("mints on B, +200ms each way: %s", spread(durations(slowMints)))
		if readsDuring != 0 || staleDuring > maxStale/3 {
			t.Errorf("with +200ms each way, checks of cached keys made %v etcd reads and the cache is %v stale: the watch does not keep it trusted",
				readsDuring, staleDuring)
		}
		// 2× normal, or 20ms more when normal is a few milliseconds (a
		// busy machine's noise): far below the 400ms an etcd round
		// trip costs.
		p99n, p99s := percentile(normal, 0.99), percentile(slow, 0.99)
		if bound := max(2*p99n, p99n+20*time.Millisecond); p99s > bound {
			t.Errorf("p99 of checks of cached keys: %v with +200ms each way, %v normally (bound %v)", p99s, p99n, bound)
		}
		if len(slowMints) == 0 {
			t.Error("no mint succeeded with +200ms each way")
		}
	}) {
		return
	}
	testutil.Eventually(t, 15*time.Second, "B's cache current again", func() bool { return staleness() < time.Second })
	// B at rest, with none of the load's connections left open, nor
	// its reverse proxy's to the upstream: the count to come back to.
	atRest := func(what string, limit int) processUsage {
		t.Helper()
		loadClient.CloseIdleConnections()
		upstream.CloseClientConnections()
		var u processUsage
		settled := func() bool {
			prev := u
			u = b.usage(t)
			return u.goroutines == prev.goroutines && u.goroutines <= limit
		}
		for deadline := time.Now().Add(30 * time.Second); !settled(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				dump := do(t, http.MethodGet, "http://"+b.admin+"/debug/pprof/goroutine?debug=1", "").body
				t.Fatalf("%s: not within 30s: %v (limit %d); goroutines:\n%s", what, u, limit, dump)
			}
		}
		return u
	}
	rest := atRest("B settles before the load", 1<<30)

	// Load on B through the cut and after it: four clients checking
	// known keys one request after another, and arrivals of checks at
	// a steady rate whether or not the earlier ones were answered (so
	// that requests held by B pile up, as a real client population's
	// would); one client presenting unknown keys (5 a second, within
	// the unknown-key budget), one minting.
	const arrivalsPerSecond = 20
	ctx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	defer func() { stopLoad(); load.Wait() }()
	var checks, unknowns, mints, doomedChecks timeline
	for i := range 4 {
		load.Go(func() {
			for j := i; ctx.Err() == nil; j++ {
				checks.add(send(http.MethodGet, b.base+"/v1/x", "", "X-Api-Key", known[j%len(known)]))
				time.Sleep(2 * time.Millisecond) // pacing
			}
		})
	}
	load.Go(func() {
		tick := time.NewTicker(time.Second / arrivalsPerSecond)
		defer tick.Stop()
		var inFlight sync.WaitGroup
		defer inFlight.Wait()
		for j := 0; ; j++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			inFlight.Go(func() { checks.add(send(http.MethodGet, b.base+"/v1/x", "", "X-Api-Key", known[j%len(known)])) })
		}
	})
	load.Go(func() {
		for ctx.Err() == nil {
			unknown, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
			unknowns.add(send(http.MethodGet, b.base+"/v1/x", "", "X-Api-Key", unknown))
			time.Sleep(200 * time.Millisecond) // pacing
		}
	})
	load.Go(func() {
		for ctx.Err() == nil {
			r := send(http.MethodPost, b.base+"/api/create_api_key", mintBody)
			if k := mintedKey(r.body); r.status == http.StatusOK && k != "" {
				ack(k)
			}
			mints.add(r)
			time.Sleep(100 * time.Millisecond) // pacing
		}
	})
	answered := func(l *timeline, what string, n int) {
		t.Helper()
		from := l.len()
		testutil.Eventually(t, 60*time.Second, what, func() bool { return l.len() >= from+n })
	}
	sample := func(n int) []processUsage {
		var us []processUsage
		for i := range n {
			if i > 0 {
				time.Sleep(time.Second) // pacing the samples
			}
			us = append(us, b.usage(t))
		}
		return us
	}
	answered(&checks, "checks before the cut", 500)
	before := peak(sample(3))

	cutAt := time.Now()
	each((*testutil.FaultProxy).Blackhole)
	a.revoke(t, auth, doomed.ID)
	revokedAt := time.Now()
	load.Go(func() {
		for ctx.Err() == nil {
			doomedChecks.add(send(http.MethodGet, b.base+"/v1/x", "", "X-Api-Key", doomed.APIKey))
			time.Sleep(20 * time.Millisecond) // pacing
		}
	})
	var mintedOnA []string
	for range 3 {
		k := a.mint(t, auth).APIKey
		mintedOnA = append(mintedOnA, k)
		ack(k)
	}
	var during []processUsage
	for next := time.Now(); time.Since(cutAt) < cutFor; next = next.Add(time.Second) {
		time.Sleep(time.Until(next)) // pacing the samples
		during = append(during, b.usage(t))
	}

	healAt := time.Now()
	each((*testutil.FaultProxy).Pass)
	testutil.Eventually(t, 60*time.Second, "B trusts its cache again", func() bool { return staleness() < time.Second })
	trusted := time.Since(healAt)
	answered(&checks, "checks after the heal", 500)
	answered(&mints, "mints after the heal", 5)
	after := peak(sample(3))
	stopLoad()
	load.Wait()
	// No more goroutines than before the load, give or take a few that
	// come and go (flushes, membership, the watch's sync points).
	restAfter := atRest("B back to its goroutines at rest", rest.goroutines+5)

	t.Run("cached keys until max_stale, then refused", func(t *testing.T) {
		var lastServed, firstRefused time.Duration = -1, -1
		var refusals []timed
		var backAt time.Duration = -1
		for _, r := range checks.all() {
			since := r.sent.Sub(cutAt)
			switch {
			case r.err != nil:
				t.Errorf("a check %v into the cut got no answer: %v", since, r.err)
			case r.sent.After(healAt):
				if r.status == http.StatusOK && (backAt < 0 || r.sent.Sub(healAt) < backAt) {
					backAt = r.sent.Sub(healAt)
				}
			case r.answered().After(healAt):
			case r.status == http.StatusOK:
				lastServed = max(lastServed, since)
				if since > maxStale+200*time.Millisecond {
					t.Errorf("a cached key served %v into the cut, past max_stale (%v)", since, maxStale)
				}
			case r.status == http.StatusUnauthorized:
				if firstRefused < 0 || since < firstRefused {
					firstRefused = since
				}
				if since >= 0 {
					refusals = append(refusals, r)
				}
				if since < maxStale-time.Second {
					t.Errorf("a cached key refused %v into the cut, before max_stale (%v)", since, maxStale)
				}
			default:
				t.Errorf("a cached key %v into the cut: %d %s, want 200 or 401", since, r.status, r.body)
			}
		}
		t.Logf("cached keys: last served %v into the cut, first refused %v into it (max_stale %v); refusals took %s; served again %v after the heal",
			lastServed.Round(time.Millisecond), firstRefused.Round(time.Millisecond), maxStale, spread(durations(refusals)), backAt.Round(time.Millisecond))
		if firstRefused < 0 {
			t.Error("cached keys were never refused during the cut")
		}
		if backAt < 0 {
			t.Error("cached keys were not served again after the heal")
		}
	})

	t.Run("a key revoked on A during the cut", func(t *testing.T) {
		var refusedAt time.Duration = -1
		for _, r := range doomedChecks.all() {
			switch {
			case r.err != nil:
				t.Errorf("a check of the revoked key got no answer: %v", r.err)
			case refusedAt < 0 && r.status == http.StatusUnauthorized:
				refusedAt = r.sent.Sub(revokedAt)
			case refusedAt >= 0 && r.status == http.StatusOK:
				t.Errorf("the revoked key served again %v after its revocation", r.sent.Sub(revokedAt))
			case r.status != http.StatusOK && r.status != http.StatusUnauthorized:
				t.Errorf("the revoked key: %d %s", r.status, r.body)
			}
		}
		t.Logf("the key revoked on A %v into the cut: refused on B %v after its revocation (max_stale %v)",
			revokedAt.Sub(cutAt).Round(time.Millisecond), refusedAt.Round(time.Millisecond), maxStale)
		if refusedAt < 0 || refusedAt > maxStale+time.Second {
			t.Errorf("the revoked key refused on B %v after its revocation, want within max_stale + 1s", refusedAt)
		}
		for _, g := range []*clusterGateway{a, b} {
			if s := g.status(t, doomed.APIKey); s != http.StatusUnauthorized {
				t.Errorf("the revoked key after the heal, on %s: %d", g.name, s)
			}
		}
	})

	t.Run("unknown keys refused throughout", func(t *testing.T) {
		var inCut []timed
		for _, r := range unknowns.all() {
			if r.err != nil || r.status != http.StatusUnauthorized {
				t.Errorf("an unknown key %v into the cut: %d %v, want 401", r.sent.Sub(cutAt), r.status, r.err)
			}
			if r.sent.After(cutAt) && r.answered().Before(healAt) {
				inCut = append(inCut, r)
			}
		}
		t.Logf("unknown keys during the cut, refused in %s", spread(durations(inCut)))
	})

	t.Run("mints answer 503 during the cut, none acknowledged is lost", func(t *testing.T) {
		var refused []timed
		var backAt time.Duration = -1
		for _, r := range mints.all() {
			switch {
			case r.err != nil:
				t.Errorf("a mint %v into the cut got no answer: %v", r.sent.Sub(cutAt), r.err)
			case r.sent.After(healAt):
				if r.status == http.StatusOK && backAt < 0 {
					backAt = r.sent.Sub(healAt)
				}
			case r.sent.After(cutAt) && r.answered().Before(healAt):
				if r.status != http.StatusServiceUnavailable || !isFailureJSON(r.body) || r.retryAfter == "" {
					t.Errorf("a mint %v into the cut: %d %q, Retry-After %q; want 503 JSON with Retry-After", r.sent.Sub(cutAt), r.status, r.body, r.retryAfter)
				}
				refused = append(refused, r)
			}
		}
		took := durations(refused)
		t.Logf("mints on B during the cut answered 503 in %s (request_timeout %v); minting again %v after the heal",
			spread(took), requestTimeout, backAt.Round(time.Millisecond))
		if len(took) == 0 {
			t.Error("no mint answered during the cut")
		} else if worst := took[len(took)-1]; worst > requestTimeout+time.Second {
			t.Errorf("a mint took %v to be refused during the cut", worst)
		}
		for _, k := range acked {
			for _, g := range []*clusterGateway{a, b} {
				if s := g.status(t, k); s != http.StatusOK {
					t.Errorf("a key acknowledged by a mint: %d on %s after the heal", s, g.name)
				}
			}
		}
		for _, k := range mintedOnA {
			if s := b.status(t, k); s != http.StatusOK {
				t.Errorf("a key minted on A during the cut: %d on B after the heal", s)
			}
		}
		t.Logf("%d acknowledged mints all work on A and B after the heal, %d of them on A during the cut", len(acked), len(mintedOnA))
	})

	t.Run("the heal", func(t *testing.T) {
		t.Logf("B trusts its cache again %v after the heal (cache staleness under 1s)", trusted.Round(time.Millisecond))
		if trusted > 10*time.Second {
			t.Errorf("B trusted its cache again only %v after the heal", trusted)
		}
	})

	t.Run("memory and goroutines level off", func(t *testing.T) {
		t.Logf("B at rest before the load %v; under load before the cut %v; during it, peak %v; after the heal %v; at rest after the load %v",
			rest, before, peak(during), after, restAfter)
		// The second half of the cut against the first after max_stale:
		// what a longer cut would add.
		var settled []processUsage
		for i, u := range during {
			if time.Duration(i)*time.Second > maxStale+3*time.Second {
				settled = append(settled, u)
			}
		}
		if len(settled) >= 4 {
			first, second := peak(settled[:len(settled)/2]), peak(settled[len(settled)/2:])
			t.Logf("past max_stale: peak of the first half %v, of the second %v", first, second)
			if second.goroutines > first.goroutines+20 || second.rss > first.rss+first.rss/5 {
				t.Errorf("still growing late in the cut: %v, then %v", first, second)
			}
		}
		// Requests B holds for up to request_timeout each cost a few
		// goroutines (connection, request, their reads).
		held := arrivalsPerSecond * int(requestTimeout/time.Second)
		if p := peak(during); p.goroutines > before.goroutines+4*held+100 || p.rss > 2*before.rss {
			t.Errorf("during the cut %v, before it %v", p, before)
		}
		if restAfter.rss > rest.rss+rest.rss/2 {
			t.Errorf("at rest after the load %v, before it %v", restAfter, rest)
		}
	})
}
