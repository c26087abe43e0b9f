package integration

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// askedClient sends the battery's requests to a proxy: many at once,
// each on a connection it may keep.
var askedClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}

func through(t testing.TB, proxy, method, uri string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+proxy+uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	res, err := askedClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

// proxyBattery runs the same requests through a proxy in front of
// upstream that asks gw: each kind of key is admitted or refused with
// the right status and fields, the upstream sees the identity and never
// the key, and no answer holds a key.
func proxyBattery(t *testing.T, gw *verifyGateway, up *verifyUpstream, proxy string) {
	plain := gw.mint(t, `{"service": "svc-plain", "scopes": ["read"]}`)
	admin := gw.mint(t, `{"service": "svc-admin", "scopes": ["admin"]}`)
	revoked := gw.mint(t, `{"service": "svc-revoked"}`)
	gw.call(t, http.MethodDelete, "keys/"+revoked.ID)
	disabled := gw.mint(t, `{"service": "svc-disabled"}`)
	gw.call(t, http.MethodPost, "keys/"+disabled.ID+"/disable")
	rated := gw.mint(t, `{"service": "svc-rated", "plan": "rated"}`)
	metered := gw.mint(t, `{"service": "svc-metered", "plan": "metered"}`)
	bare := gw.mint(t, `{"service": "svc-bare"}`)                            // no scopes, no plan
	unknown := plain.APIKey[:10] + strings.Repeat("A", len(plain.APIKey)-10) // fails its checksum, or is unknown
	secrets := []string{plain.APIKey, admin.APIKey, revoked.APIKey, disabled.APIKey, rated.APIKey, metered.APIKey, bare.APIKey}
	// The scopes the upstream sees for each owner: none, also when the
	// client forged them, for a key without.
	scopes := map[string]string{"svc-plain": "read", "svc-admin": "admin"}
	forged := []string{"X-Apikeys-Scopes", "admin", "X-Apikeys-Credits-Remaining", "1000000", "X-Apikeys-Ratelimit-Remaining", "1000000"}
	bearer := func(k createdKey) []string { return []string{"Authorization", "Bearer " + k.APIKey} }

	type want struct {
		status    int
		challenge string // a prefix of WWW-Authenticate
		user      string // X-Apikeys-User upstream
	}
	cases := []struct {
		name    string
		method  string
		uri     string
		headers []string
		want    want
	}{
		{"bearer", "GET", "/v1/x", bearer(plain), want{200, "", "svc-plain"}},
		{"X-Api-Key", "POST", "/v1/x", []string{"X-Api-Key", plain.APIKey}, want{200, "", "svc-plain"}},
		{"forged identity is replaced", "GET", "/v1/x", append(bearer(plain), "X-Apikeys-User", "root", "X-Apikeys-Source", "password"), want{200, "", "svc-plain"}},
		{"forged fields, a key without scopes or plan", "GET", "/v1/x", append(bearer(bare), forged...), want{200, "", "svc-bare"}},
		{"admin route with the scope", "GET", "/admin/users", bearer(admin), want{200, "", "svc-admin"}},
		{"no key", "GET", "/v1/x", nil, want{401, `Bearer realm="apikeys"`, ""}},
		{"unknown", "GET", "/v1/x", []string{"Authorization", "Bearer " + unknown}, want{401, `Bearer realm="apikeys", error="invalid_token"`, ""}},
		{"revoked", "GET", "/v1/x", bearer(revoked), want{401, `Bearer realm="apikeys", error="invalid_token"`, ""}},
		{"disabled", "GET", "/v1/x", bearer(disabled), want{401, `Bearer realm="apikeys", error="invalid_token"`, ""}},
		{"two keys", "GET", "/v1/x", append(bearer(plain), "X-Api-Key", admin.APIKey), want{401, `Bearer realm="apikeys", error="invalid_request"`, ""}},
		{"out of scope", "GET", "/admin/users", bearer(plain), want{403, `Bearer realm="apikeys", error="insufficient_scope", scope="admin"`, ""}},
		{"out of scope, the forwarded URI forged", "GET", "/admin/users", append(bearer(plain), "X-Forwarded-Uri", "/v1/x", "X-Forwarded-Method", "GET"), want{403, `Bearer realm="apikeys", error="insufficient_scope", scope="admin"`, ""}},
		{"out of scope, another case", "GET", "/ADMIN/users", bearer(plain), want{403, `Bearer realm="apikeys", error="insufficient_scope"`, ""}},
		{"rated 1", "GET", "/v1/x", bearer(rated), want{200, "", "svc-rated"}},
		{"rated 2", "GET", "/v1/x", bearer(rated), want{200, "", "svc-rated"}},
		{"rated 3: over the limit", "GET", "/v1/x", bearer(rated), want{429, "", ""}},
		{"metered, costly", "GET", "/v1/costly/x", bearer(metered), want{200, "", "svc-metered"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := up.hits.Load()
			r := through(t, proxy, c.method, c.uri, c.headers...)
			if r.status != c.want.status {
				t.Fatalf("%d %s, want %d", r.status, r.body, c.want.status)
			}
			for _, k := range secrets {
				for name, vs := range r.header {
					if strings.Contains(strings.Join(vs, " "), k[len(k)-16:]) {
						t.Fatalf("the answer's %s holds a key", name)
					}
				}
				if strings.Contains(r.body, k[len(k)-16:]) {
					t.Fatal("the answer's body holds a key")
				}
			}
			if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, c.want.challenge) || (c.want.challenge == "") != (got == "") {
				t.Fatalf("WWW-Authenticate %q, want %q", got, c.want.challenge)
			}
			hits := up.hits.Load() - before
			if c.want.status != 200 {
				if hits != 0 {
					t.Fatal("a refused request reached the upstream")
				}
				if c.want.status == 429 {
					if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
						t.Fatalf("429 without Retry-After: %v", r.header)
					}
					if rl := r.header.Get("RateLimit"); !strings.HasPrefix(rl, `"per-minute";r=0;t=`) || r.header.Get("RateLimit-Policy") != `"per-minute";q=2;w=60` {
						t.Fatalf("RateLimit %q, RateLimit-Policy %q", rl, r.header.Get("RateLimit-Policy"))
					}
				}
				return
			}
			if hits != 1 || r.body != "upstream" {
				t.Fatalf("the upstream was reached %d times, answered %q", hits, r.body)
			}
			h, _ := up.lastRequest()
			if h.Get("X-Apikeys-User") != c.want.user || h.Get("X-Apikeys-Source") != "service" || len(h.Get("X-Apikeys-Key-Id")) != 32 {
				t.Fatalf("upstream identity: %q %q %q", h.Get("X-Apikeys-User"), h.Get("X-Apikeys-Source"), h.Get("X-Apikeys-Key-Id"))
			}
			if len(h.Values("X-Apikeys-User")) != 1 {
				t.Fatalf("upstream got X-Apikeys-User %q", h.Values("X-Apikeys-User"))
			}
			if got := strings.Join(h.Values("X-Apikeys-Scopes"), ","); got != scopes[c.want.user] {
				t.Fatalf("upstream got X-Apikeys-Scopes %q, want %q", got, scopes[c.want.user])
			}
			if c.want.user == "svc-bare" && (h.Get("X-Apikeys-Credits-Remaining") != "" || h.Get("X-Apikeys-Ratelimit-Remaining") != "") {
				t.Fatalf("upstream got the client's forged X-Apikeys-Credits-Remaining %q, X-Apikeys-Ratelimit-Remaining %q",
					h.Get("X-Apikeys-Credits-Remaining"), h.Get("X-Apikeys-Ratelimit-Remaining"))
			}
			if c.want.user == "svc-rated" && h.Get("X-Apikeys-Ratelimit-Remaining") == "" {
				t.Fatal("upstream got no X-Apikeys-Ratelimit-Remaining for a key with a rate")
			}
			if c.want.user == "svc-metered" && h.Get("X-Apikeys-Credits-Remaining") != "997" {
				t.Fatalf("credits remaining upstream: %q, want 997", h.Get("X-Apikeys-Credits-Remaining"))
			}
			for name, vs := range h {
				for _, k := range secrets {
					if strings.Contains(strings.Join(vs, " "), k) {
						t.Fatalf("the upstream got the key in %s", name)
					}
				}
			}
		})
	}
}

// askFunc asks about a GET of path presenting key (in X-Api-Key) as a
// client of a proxy would, and returns the status the client gets.
type askFunc func(path, key string) (int, error)

// askThrough asks through the proxy at addr.
func askThrough(addr string) askFunc {
	return func(path, key string) (int, error) {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("X-Api-Key", key)
		res, err := askedClient.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
}

// revocationDelay revokes n keys on gw while 4 clients ask about each,
// and returns how long after each revocation was sent the first refusal
// came; it fails if a request sent after a revocation was answered is
// admitted, or the first request after it is not refused.
func revocationDelay(t *testing.T, gw *verifyGateway, ask askFunc, n int) []time.Duration {
	var delays []time.Duration
	for i := range n {
		k := gw.mint(t, fmt.Sprintf(`{"service": "svc-revoke-%d"}`, i))
		var revokedAt atomic.Int64 // when the revocation was answered, unix ns
		var firstRefusal atomic.Int64
		var late atomic.Int64 // admitted, though sent after the revocation
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					sent := time.Now().UnixNano()
					status, err := ask("/v1/x", k.APIKey)
					if err != nil {
						continue
					}
					at := revokedAt.Load()
					switch {
					case status == http.StatusUnauthorized:
						firstRefusal.CompareAndSwap(0, time.Now().UnixNano())
					case status == http.StatusOK && at != 0 && sent > at:
						late.Add(1)
					}
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		gw.call(t, http.MethodDelete, "keys/"+k.ID)
		revokedAt.Store(time.Now().UnixNano())
		next, err := ask("/v1/x", k.APIKey)
		deadline := time.Now().Add(5 * time.Second)
		for firstRefusal.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		close(stop)
		wg.Wait()
		if next != http.StatusUnauthorized {
			t.Fatalf("the first request after the revocation was answered: %d %v", next, err)
		}
		if late.Load() != 0 {
			t.Fatalf("%d requests sent after the revocation was answered were admitted", late.Load())
		}
		delays = append(delays, time.Duration(firstRefusal.Load()-start.UnixNano()))
	}
	slices.Sort(delays)
	return delays
}

// exactCredits asks about requests costing 3 with one key of 1000
// credits from 64 clients until each is refused, and checks that exactly
// 333 were admitted, by the clients' count and, unless up is nil, the
// upstream's.
func exactCredits(t *testing.T, gw *verifyGateway, up *verifyUpstream, ask askFunc) {
	k := gw.mint(t, `{"service": "svc-credits", "plan": "metered"}`)
	hits := func() int64 {
		if up == nil {
			return 0
		}
		return up.hits.Load()
	}
	before := hits()
	var admitted, refused, other atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for admitted.Load() <= 1000 { // bounded, should credits not be charged
				status, err := ask("/v1/costly/x", k.APIKey)
				switch {
				case err != nil:
					other.Add(1)
					return
				case status == http.StatusOK:
					admitted.Add(1)
				case status == http.StatusTooManyRequests:
					refused.Add(1)
					return
				default:
					other.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 333 || (up != nil && hits()-before != 333) || other.Load() != 0 {
		t.Fatalf("1000 credits at 3 a request: %d admitted, %d reached the upstream, %d refused with 429, %d other answers; want 333",
			admitted.Load(), hits()-before, refused.Load(), other.Load())
	}
	t.Logf("1000 credits at 3 a request, 64 clients: %d admitted, %d refused", admitted.Load(), refused.Load())
}

// asksTheGateway runs a proxy, started by start in front of an upstream
// and asking a gateway, through the battery, revocations and credits.
// Revocation delays are logged, not asserted: timings flake on a shared
// machine; that no request sent after a revocation was answered is
// admitted is asserted.
func asksTheGateway(t *testing.T, proxyName string, start func(t *testing.T, gw, upstream string) string) {
	up := newVerifyUpstream(t)
	gw := startVerifyGateway(t, up.addr())
	proxy := start(t, gw.addr, up.addr())
	proxyBattery(t, gw, up, proxy)
	t.Run("revoked from the next request", func(t *testing.T) {
		d := revocationDelay(t, gw, askThrough(proxy), 50)
		t.Logf("revocation to first refusal through %s, 50 keys: p50 %v, p99 %v, max %v", proxyName, percentile(d, 0.5), percentile(d, 0.99), d[len(d)-1])
	})
	t.Run("exact credits", func(t *testing.T) { exactCredits(t, gw, up, askThrough(proxy)) })
}

// TestNginxAsksTheGateway runs README's nginx configuration in front of
// an upstream, asking the gateway by auth_request.
func TestNginxAsksTheGateway(t *testing.T) { asksTheGateway(t, "nginx", startNginx) }

// TestStockCaddyAsksTheGateway runs README's forward_auth configuration
// on a Caddy built without the plugin.
func TestStockCaddyAsksTheGateway(t *testing.T) {
	asksTheGateway(t, "stock Caddy", startStockCaddy)
}

// TestTraefikAsksTheGateway runs README's Traefik dynamic configuration
// (forwardAuth) on Traefik built from its module.
func TestTraefikAsksTheGateway(t *testing.T) {
	asksTheGateway(t, "Traefik "+traefikVersion, startTraefik)
}
