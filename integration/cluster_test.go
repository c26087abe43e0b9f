package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// clusterGateway is the real binary running Caddyfile.cluster.
type clusterGateway struct {
	*runningCaddy
	name, base, admin string
}

func startClusterGateway(t *testing.T, name string, c *etcdtest.Cluster, upstream string) *clusterGateway {
	t.Helper()
	return startClusterGatewayAt(t, name, c.Endpoints(), upstream)
}

// startClusterGatewayAt is startClusterGateway reaching the cluster at
// endpoints (through proxies, say).
func startClusterGatewayAt(t *testing.T, name string, endpoints []string, upstream string) *clusterGateway {
	t.Helper()
	dir := t.TempDir()
	ports := holdPorts(t, 2)
	g := &clusterGateway{name: name, base: "http://" + ports[0].Addr, admin: ports[1].Addr}
	g.runningCaddy = startBinary(t, clusterCopy(t, ports), dir, ports, clusterEnv(ports, endpoints, upstream)...)
	return g
}

// clusterCopy writes Caddyfile.cluster with the gateway's site on
// ports[0] (fd/3) and its admin API on ports[1] (fd/4); clusterEnv gives
// the rest of its environment.
func clusterCopy(t testing.TB, ports []heldPort) string {
	t.Helper()
	return configCopy(t, "Caddyfile.cluster", [][2]string{
		{"http://{$GATEWAY_ADDR::8000} {\n", "http://{$GATEWAY_ADDR::8000} {\n\tbind fd/3\n"},
		{"admin {$CADDY_ADMIN:localhost:2019}", adminOption(ports[1], 4)},
	}, nil)
}

// clusterEnv is the environment Caddyfile.cluster reads, for a gateway
// on ports.
func clusterEnv(ports []heldPort, endpoints []string, upstream string) []string {
	return []string{
		"ETCD_ENDPOINTS=" + strings.Join(endpoints, " "),
		"UPSTREAM=" + strings.TrimPrefix(upstream, "http://"),
		"GATEWAY_ADDR=" + ports[0].Addr,
	}
}

func (g *clusterGateway) mint(t *testing.T, auth string) createdKey {
	t.Helper()
	return decodeCreated(t, post(t, g.base+"/api/create_api_key", `{"auth": `+auth+`}`))
}

func (g *clusterGateway) status(t *testing.T, key string) int {
	t.Helper()
	return do(t, http.MethodGet, g.base+"/v1/x", "", "X-Api-Key", key).status
}

func (g *clusterGateway) revoke(t *testing.T, auth, id string) {
	t.Helper()
	r := post(t, g.base+"/api/delete_api_key", `{"auth": `+auth+`, "api_key_id": "`+id+`"}`)
	if r.status != http.StatusOK {
		t.Fatalf("delete on %s: %d %s", g.name, r.status, r.body)
	}
}

// untilRefused polls g with key until it answers 401 and returns how long
// after start that was; it fails the test after 5s. It polls every
// millisecond, not with testutil.Eventually's backoff: what it returns
// is a measurement.
func (g *clusterGateway) untilRefused(key string, start time.Time) (time.Duration, error) {
	for {
		req, _ := http.NewRequest(http.MethodGet, g.base+"/v1/x", nil)
		req.Header.Set("X-Api-Key", key)
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		if res.StatusCode == http.StatusUnauthorized {
			return time.Since(start), nil
		}
		if res.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s answered %d", g.name, res.StatusCode)
		}
		if time.Since(start) > 5*time.Second {
			return 0, fmt.Errorf("%s still accepts a key revoked %v ago", g.name, time.Since(start))
		}
		time.Sleep(time.Millisecond)
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// TestGatewaysShareAnEtcdCluster runs Caddyfile.cluster (docs/cluster.md) on
// three gateways over a three-member etcd cluster on loopback.
func TestGatewaysShareAnEtcdCluster(t *testing.T) {
	c := etcdtest.Start(t, 3)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"user": %q}`, r.Header.Get("X-Apikeys-User"))
	}))
	defer upstream.Close()
	var gws []*clusterGateway
	for _, name := range []string{"A", "B", "C"} {
		gws = append(gws, startClusterGateway(t, name, c, upstream.URL))
	}
	a, b, cg := gws[0], gws[1], gws[2]

	// A user added through one gateway signs in on the others.
	mustCLI(t, "alicepw\n", "--address", a.admin, "user", "add", "alice")
	auth := `{"username": "alice", "password": "alicepw"}`

	t.Run("minted anywhere, valid everywhere", func(t *testing.T) {
		for _, minter := range gws {
			k := minter.mint(t, auth)
			for _, g := range gws {
				r := do(t, http.MethodGet, g.base+"/v1/x", "", "X-Api-Key", k.APIKey)
				if r.status != http.StatusOK || !strings.Contains(r.body, `"alice"`) {
					t.Fatalf("key minted on %s, used on %s: %d %s", minter.name, g.name, r.status, r.body)
				}
			}
		}
	})

	t.Run("each gateway exports how current its cache is", func(t *testing.T) {
		for _, g := range gws {
			metrics := "http://" + g.admin + "/metrics"
			if v := metricValue(t, metrics, "caddy_apikeys_cache_staleness_seconds"); v <= 0 || v > 2 {
				t.Errorf("%s: cache staleness %vs, want a fraction of a second", g.name, v)
			}
			if v := metricValue(t, metrics, "caddy_apikeys_cache_resets_total"); v != 1 {
				t.Errorf("%s: %v cache resets, want 1 (the start)", g.name, v)
			}
		}
	})

	t.Run("revocation reaches every gateway", func(t *testing.T) {
		const trials = 100
		var lat []time.Duration
		for i := range trials {
			k := a.mint(t, auth)
			for _, g := range []*clusterGateway{b, cg} {
				if s := g.status(t, k.APIKey); s != http.StatusOK { // now cached there
					t.Fatalf("fresh key on %s: %d", g.name, s)
				}
			}
			// Deleted by its owner, or disabled by an operator.
			start := time.Now()
			if i%2 == 0 {
				a.revoke(t, auth, k.ID)
			} else if r := do(t, http.MethodPost, "http://"+a.admin+"/apikeys/keys/"+k.ID+"/disable", ""); r.status != http.StatusOK {
				t.Fatalf("disable on A: %d %s", r.status, r.body)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			for _, g := range []*clusterGateway{b, cg} {
				wg.Go(func() {
					d, err := g.untilRefused(k.APIKey, start)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Error(err)
						return
					}
					lat = append(lat, d)
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
		}
		slices.Sort(lat)
		t.Logf("delete or disable on A until refused on B and C, from sending the request, %d trials × 2 gateways: p50 %v, p90 %v, p99 %v, max %v",
			trials, percentile(lat, 0.50), percentile(lat, 0.90), percentile(lat, 0.99), lat[len(lat)-1])
	})

	t.Run("last use recorded on other gateways, without a write per request", func(t *testing.T) {
		k := a.mint(t, auth)
		before := c.Revision(t)
		const uses = 300
		for i := range uses {
			if s := gws[1+i%2].status(t, k.APIKey); s != http.StatusOK {
				t.Fatalf("use %d: %d", i, s)
			}
		}
		testutil.Eventually(t, 15*time.Second, "A lists the use made on B and C", func() bool {
			for _, lk := range fetchKeysAt(t, a.base, auth) {
				if lk.ID == k.ID {
					return lk.LastUsed != nil
				}
			}
			return false
		})
		// Each write to etcd adds one revision; the gateways flush
		// last-used times every 5s, one transaction each.
		writes := c.Revision(t) - before
		t.Logf("%d uses on B and C made %d etcd writes", uses, writes)
		if writes > 10 {
			t.Fatalf("%d uses made %d etcd writes", uses, writes)
		}
	})

	t.Run("the leader stops and comes back", func(t *testing.T) {
		leader := c.Leader(t)
		stable := a.mint(t, auth)
		var requests, failures atomic.Int64
		var failMu sync.Mutex
		var failed []string
		record := func(what string, ok bool) {
			requests.Add(1)
			if !ok {
				failures.Add(1)
				failMu.Lock()
				failed = append(failed, what)
				failMu.Unlock()
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		// Stopped below, and also when a wait fails.
		defer func() { cancel(); wg.Wait() }()
		for _, g := range gws { // steady validations on every gateway
			wg.Go(func() {
				for ctx.Err() == nil {
					r := do(t, http.MethodGet, g.base+"/v1/x", "", "X-Api-Key", stable.APIKey)
					record("validate on "+g.name, r.status == http.StatusOK)
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
		wg.Go(func() { // minting on each in turn, each key used on the next
			for i := 0; ctx.Err() == nil; i++ {
				minter, user := gws[i%3], gws[(i+1)%3]
				r := post(t, minter.base+"/api/create_api_key", `{"auth": `+auth+`}`)
				record("mint on "+minter.name+": "+r.body, r.status == http.StatusOK)
				if r.status == http.StatusOK {
					k := decodeCreated(t, r)
					record("fresh key on "+user.name, user.status(t, k.APIKey) == http.StatusOK)
				}
			}
		})
		// answered waits until the clients have had n more answers.
		answered := func(what string, n int64) {
			t.Helper()
			from := requests.Load()
			testutil.Eventually(t, 60*time.Second, what, func() bool { return requests.Load() >= from+n })
		}
		answered("requests before the leader stops", 300)
		c.Members[leader].Stop()
		// The two others elect a leader, and serve.
		for i, m := range c.Members {
			if i != leader {
				if err := m.WaitHealthy(30 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
		answered("requests with the leader stopped", 600)
		// Still everything works with two members.
		k := b.mint(t, auth)
		if a.status(t, k.APIKey) != http.StatusOK {
			t.Error("a key minted with a member down is refused")
		}
		start := time.Now()
		b.revoke(t, auth, k.ID)
		if _, err := a.untilRefused(k.APIKey, start); err != nil {
			t.Error(err)
		}
		c.Members[leader].Restart(t)
		answered("requests with the member back", 300)
		cancel()
		wg.Wait()
		t.Logf("%d requests while the leader (%s) stopped and restarted, %d failed", requests.Load(), c.Members[leader].Name, failures.Load())
		if len(failed) > 0 {
			t.Errorf("failed requests: %v", failed[:min(len(failed), 10)])
		}

		// The restarted member has caught up: its own copy, read without
		// asking the leader, holds every key the others do.
		others := slices.Delete(slices.Clone(c.Endpoints()), leader, leader+1)
		want := countKeys(t, c, others, false)
		testutil.Eventually(t, 15*time.Second, "the restarted member holds every key", func() bool {
			return countKeys(t, c, c.Endpoints()[leader:leader+1], true) == want
		})
	})
}

// countKeys counts the stored keys through the given endpoints; a
// serializable read answers from the member's own copy.
func countKeys(t *testing.T, c *etcdtest.Cluster, endpoints []string, serializable bool) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, err := c.Client(t, endpoints...).Get(ctx, "/caddy-apikeys/keys/", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestGatewayWhenEtcdIsUnreachable shows what a gateway on etcd does when
// the whole cluster is gone: minting answers 503 JSON, unknown keys are
// refused, keys it verified recently keep working for max_stale and are
// refused after it, and everything works again once etcd is back.
func TestGatewayWhenEtcdIsUnreachable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	ports := holdPorts(t, 2) // fd/3 the site, fd/4 admin
	config := filepath.Join(dir, "Caddyfile")
	const maxStale = 3 * time.Second
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		store etcd %s {
			request_timeout 1s
			max_stale %v
		}
		user alice %s
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/* {
		header X-Api-Key
	}
	respond /v1/* "ok"
}
`, adminOption(ports[1], 4), c.Endpoints()[0], maxStale, bcryptHash(t, "alicepw"), ports[0].Addr)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startBinary(t, config, dir, ports)
	g := &clusterGateway{name: "A", base: "http://" + ports[0].Addr, admin: ports[1].Addr}
	auth := `{"username": "alice", "password": "alicepw"}`
	seen := g.mint(t, auth)
	testutil.Eventually(t, 15*time.Second, "the key works", func() bool { return g.status(t, seen.APIKey) == http.StatusOK })
	// Until the key's creation has arrived (it drops lookups in flight)
	// and the watch has caught up, a use of the key reads etcd; once one
	// does not, the key is cached.
	metrics := "http://" + g.admin + "/metrics"
	const reads = `caddy_apikeys_store_operation_duration_seconds_count{operation="key_by_hash"}`
	testutil.Eventually(t, 15*time.Second, "the key used from the cache", func() bool {
		before := metricValue(t, metrics, reads)
		return g.status(t, seen.APIKey) == http.StatusOK && metricValue(t, metrics, reads) == before
	})

	c.Members[0].Kill()
	gone := time.Now()
	if s := g.status(t, seen.APIKey); s != http.StatusOK {
		t.Fatalf("a key seen recently: %d right after etcd went away, want 200", s)
	}
	r := post(t, g.base+"/api/create_api_key", `{"auth": `+auth+`}`)
	var failure struct {
		Success *bool  `json:"success"`
		Error   string `json:"error"`
	}
	if r.status != http.StatusServiceUnavailable || json.Unmarshal([]byte(r.body), &failure) != nil ||
		failure.Success == nil || *failure.Success || failure.Error == "" {
		t.Fatalf("minting with etcd gone: %d %s, want 503 JSON", r.status, r.body)
	}
	unknown, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now()) // well formed, never seen
	if s := g.status(t, unknown); s != http.StatusUnauthorized {
		t.Fatalf("an unknown key with etcd gone: %d, want 401", s)
	}
	if s := g.status(t, seen.APIKey); s != http.StatusOK && time.Since(gone) < maxStale-time.Second {
		t.Fatalf("a key seen recently: %d %v after etcd went away, want 200 within max_stale", s, time.Since(gone))
	}
	// Refused once max_stale has passed: no use after it is let through.
	pastStale := gone.Add(maxStale + 200*time.Millisecond)
	testutil.Eventually(t, 30*time.Second, "the key seen recently refused with 401 (fail closed)", func() bool {
		sent := time.Now()
		s := g.status(t, seen.APIKey)
		if s != http.StatusUnauthorized && sent.After(pastStale) {
			t.Fatalf("a key seen recently: %d %v after etcd went away, past max_stale, want 401 (fail closed)", s, sent.Sub(gone))
		}
		return s == http.StatusUnauthorized
	})

	c.Restart(t)
	testutil.Eventually(t, 15*time.Second, "the key works again", func() bool { return g.status(t, seen.APIKey) == http.StatusOK })
	testutil.Eventually(t, 15*time.Second, "minting works again", func() bool {
		return post(t, g.base+"/api/create_api_key", `{"auth": `+auth+`}`).status == http.StatusOK
	})
}

// TestREADMEShowsTheTestedClusterCaddyfile keeps the example of the
// guide to running several gateways (docs/cluster.md) the file the
// cluster test runs.
func TestREADMEShowsTheTestedClusterCaddyfile(t *testing.T) {
	guide := string(mustRead(t, filepath.Join(repoRoot(t), "docs", "cluster.md")))
	file := string(mustRead(t, filepath.Join(repoRoot(t), "Caddyfile.cluster")))
	if !strings.Contains(guide, "```caddyfile\n"+file+"```") {
		t.Fatal("docs/cluster.md does not show Caddyfile.cluster verbatim")
	}
}

// TestMigrateFromBoltToCluster moves a single gateway's bbolt store into
// etcd with `caddy apikeys migrate`, then runs Caddyfile.cluster on it:
// the old keys and stored users work there. A key of a user declared only
// in the single gateway's config is refused until that user exists in the
// cluster, and the migration says so.
func TestMigrateFromBoltToCluster(t *testing.T) {
	single := startHardened(t, "", "")
	mustCLI(t, "bobpw\n", "--address", single.admin, "user", "add", "bob")
	keys := []string{
		single.mint(t, `{"username": "alice", "password": "alicepw"}`).APIKey,
		single.mint(t, `{"username": "bob", "password": "bobpw"}`).APIKey,
	}
	single.Stop()

	c := etcdtest.Start(t, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	t.Setenv("ETCD_ENDPOINTS", c.Endpoints()[0])
	t.Setenv("UPSTREAM", strings.TrimPrefix(upstream.URL, "http://"))
	clusterFile := filepath.Join(repoRoot(t), "Caddyfile.cluster")
	out := mustCLI(t, "", "migrate", "--db", single.db, "--to", clusterFile)
	if !strings.Contains(out, "users: 1 copied, 0 already there") || !strings.Contains(out, "keys: 2 copied, 0 already there") ||
		!strings.Contains(out, "warning: 1 keys belong to password users") || !strings.Contains(out, ": alice.") {
		t.Fatalf("migrate said:\n%s", out)
	}
	if out := mustCLI(t, "", "migrate", "--db", single.db, "--to", clusterFile); !strings.Contains(out, "keys: 0 copied, 2 already there") {
		t.Fatalf("migrating again said:\n%s", out)
	}

	g := startClusterGateway(t, "A", c, upstream.URL)
	if s := g.status(t, keys[1]); s != http.StatusOK {
		t.Fatalf("a stored user's key minted on the single gateway: %d on the cluster", s)
	}
	g.mint(t, `{"username": "bob", "password": "bobpw"}`) // a stored user came along
	if s := g.status(t, keys[0]); s != http.StatusUnauthorized {
		t.Fatalf("the key of a user the cluster does not have: %d, want 401", s)
	}
	if out, ok := cli(t, "alicepw\n", "--address", g.admin, "user", "add", "alice"); ok || !strings.Contains(out, "--adopt-keys") {
		t.Fatalf("adding alice, whose name has orphaned keys: ok=%v\n%s", ok, out)
	}
	mustCLI(t, "alicepw\n", "--address", g.admin, "user", "add", "alice", "--adopt-keys")
	if s := g.status(t, keys[0]); s != http.StatusOK {
		t.Fatalf("the key of a user added to the cluster: %d", s)
	}
}
