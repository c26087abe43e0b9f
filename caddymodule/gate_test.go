package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// testGate sets g up on a fresh app, as Provision does, and mints a key
// for the service owner alice.
func testGate(t *testing.T, g *APIKeyGate) (*APIKeyGate, *App, string) {
	t.Helper()
	app, err := provisionApp(t, `{"store": `+storeJSON(filepath.Join(t.TempDir(), "k.db"))+`}`)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.setUp(app, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	m, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{Title: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	return g, app, m.Secret
}

// gateAnswer is what the client and the upstream see of a request sent
// through the gate.
type gateAnswer struct {
	status   int             // the refusal's status, or what the upstream answered
	header   http.Header     // the answer's header fields
	upstream *http.Request   // the request the upstream got; nil if refused
	repl     *caddy.Replacer // the request's placeholders
	err      error           // the refusal, for the server's error routes
	wrote    bool            // whether the gate or the upstream wrote a body
}

// admitted reports whether the request reached the upstream.
func (a gateAnswer) admitted() bool { return a.upstream != nil }

// serveGate sends r through g to an upstream that answers 200. r is
// given its placeholders in place, so that what the gate did to it (as
// to its body) shows in r also when it is refused.
func serveGate(g *APIKeyGate, r *http.Request) gateAnswer {
	a := gateAnswer{repl: caddy.NewReplacer()}
	*r = *r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, a.repl))
	w := httptest.NewRecorder()
	a.err = g.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		a.upstream = r
		w.WriteHeader(http.StatusOK)
		return nil
	}))
	a.status, a.header, a.wrote = w.Code, w.Header(), w.Body.Len() > 0
	var he caddyhttp.HandlerError
	if errors.As(a.err, &he) {
		a.status = he.StatusCode
	}
	return a
}

func TestGateKeySources(t *testing.T) {
	g, _, key := testGate(t, &APIKeyGate{Headers: []string{"X-Api-Key"}, QueryParam: "api_key", Body: true})

	cases := []struct {
		name    string
		req     func() *http.Request
		ok      bool
		checkUp func(t *testing.T, r *http.Request)
	}{
		{"bearer", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/", nil)
			r.Header.Set("Authorization", "Bearer "+key)
			return r
		}, true, func(t *testing.T, r *http.Request) {
			if r.Header.Get("Authorization") != "" {
				t.Error("Authorization forwarded")
			}
		}},
		{"lowercase bearer scheme", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/", nil)
			r.Header.Set("Authorization", "bearer "+key)
			return r
		}, true, nil},
		{"custom header", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/", nil)
			r.Header.Set("x-api-key", key)
			return r
		}, true, func(t *testing.T, r *http.Request) {
			if r.Header.Get("X-Api-Key") != "" {
				t.Error("X-Api-Key forwarded")
			}
		}},
		{"query", func() *http.Request {
			return httptest.NewRequest("GET", "/v1/x?a=1&api_key="+key+"&b=2", nil)
		}, true, func(t *testing.T, r *http.Request) {
			if strings.Contains(r.URL.RawQuery, key) || strings.Contains(r.RequestURI, key) || r.URL.Query().Get("a") != "1" || r.URL.Query().Get("b") != "2" {
				t.Errorf("query after strip: %q / %q", r.URL.RawQuery, r.RequestURI)
			}
		}},
		{"body", func() *http.Request {
			r := httptest.NewRequest("POST", "/v1/", strings.NewReader(`{"auth": {"api_key": "`+key+`"}, "q": 1}`))
			r.Header.Set("Content-Type", "application/json; charset=utf-8")
			return r
		}, true, func(t *testing.T, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if string(b) != `{"auth": {"api_key": "`+key+`"}, "q": 1}` {
				t.Errorf("upstream body %q", b)
			}
		}},
		{"no key", func() *http.Request { return httptest.NewRequest("GET", "/v1/", nil) }, false, nil},
		{"basic credentials are not a key", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/", nil)
			r.SetBasicAuth("alice", key)
			return r
		}, false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.req()
			a := serveGate(g, r)
			if a.admitted() != c.ok || a.status != map[bool]int{true: 200, false: 401}[c.ok] {
				t.Fatalf("admitted = %v (%d, %v); want %v", a.admitted(), a.status, a.err, c.ok)
			}
			if c.ok {
				user, _ := a.repl.GetString("http.auth.user.id")
				title, _ := a.repl.GetString("http.auth.user.key_title")
				id, _ := a.repl.GetString("http.auth.user.key_id")
				if user != "alice" || title != "ci" || len(id) != 32 {
					t.Fatalf("placeholders: user %q, title %q, key id %q", user, title, id)
				}
			}
			if !c.ok && !strings.HasPrefix(a.header.Get("WWW-Authenticate"), `Bearer realm="apikeys"`) {
				t.Fatalf("challenge %q", a.header.Get("WWW-Authenticate"))
			}
			if c.checkUp != nil {
				c.checkUp(t, r)
			}
		})
	}
}

func TestGateKeepCredentials(t *testing.T) {
	g, _, key := testGate(t, &APIKeyGate{KeepCredentials: true})
	r := httptest.NewRequest("GET", "/v1/", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	a := serveGate(g, r)
	if !a.admitted() {
		t.Fatal("refused")
	}
	if a.upstream.Header.Get("Authorization") != "Bearer "+key {
		t.Fatal("key removed despite keep_credentials")
	}
}

// A key the store cannot look up is refused like a key it does not know,
// and the fault is logged.
func TestGateStoreFaultRefuses(t *testing.T) {
	g, app, _ := testGate(t, &APIKeyGate{})
	core, logs := observer.New(zap.ErrorLevel)
	g.logger = zap.New(core)
	unknown, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now()) // not cached: needs the store
	if err := app.keyring.Store().Close(); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v1/", nil)
	r.Header.Set("Authorization", "Bearer "+unknown)
	if a := serveGate(g, r); a.admitted() || a.status != http.StatusUnauthorized {
		t.Fatalf("a key checked against a closed store: admitted %v, %d; want 401", a.admitted(), a.status)
	}
	if logs.FilterMessage("key store failure while checking a key").Len() != 1 {
		t.Fatalf("the store fault was not logged: %v", logs.All())
	}
}

func TestAPIHandlerStoreFaultIs503WithoutDetail(t *testing.T) {
	app, err := provisionApp(t, `{"store": `+storeJSON(filepath.Join(t.TempDir(), "k.db"))+`,
		"users": [{"username": "alice", "password": "$2a$04$sJTX.IP/bwZBexMQ2lHIZOZRmaUH0rDE.7HxZoWAWCmxv8mcyDnoq"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	h := &APIHandler{}
	if err := h.setUp(app, caddy.Log()); err != nil {
		t.Fatal(err)
	}
	if err := app.keyring.Store().Close(); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/api/create_api_key", strings.NewReader(`{"auth": {"username": "alice", "password": "pw"}}`))
	if err := h.ServeHTTP(w, r, nil); err != nil {
		t.Fatal(err)
	}
	want := `{"success":false,"error":"the key store is unavailable; try again later"}`
	if w.Code != http.StatusServiceUnavailable || w.Body.String() != want {
		t.Fatalf("%d %s, want 503 %s", w.Code, w.Body.String(), want)
	}
	if strings.Contains(w.Body.String(), boltstore.ErrClosed.Error()) {
		t.Fatal("internal error leaked")
	}
}

// After a reload, the old config's servers may still be finishing
// requests when its app is cleaned up. Mints and key checks racing the
// cleanup get an answer (the key, or that the store is unavailable),
// never a panic or a dropped connection.
func TestHandlersRacingCleanupAnswer(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	app, err := provisionApp(t, `{"store": `+storeJSON(filepath.Join(t.TempDir(), "k.db"))+`,
		"users": [{"username": "alice", "password": "`+string(hash)+`"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	g := &APIKeyGate{}
	if err := g.setUp(app, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	m, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("svc"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h := &APIHandler{}
	if err := h.setUp(app, caddy.Log()); err != nil {
		t.Fatal(err)
	}
	mint := func() int {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/api/create_api_key", strings.NewReader(`{"auth": {"username": "alice", "password": "pw"}}`))
		if err := h.ServeHTTP(w, r, nil); err != nil {
			t.Error(err)
		}
		return w.Code
	}
	if code := mint(); code != http.StatusOK {
		t.Fatalf("first mint: %d", code)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int]int{} // mints' answers by status
	total := 0
	answered := func() int { mu.Lock(); defer mu.Unlock(); return total }
	stop := make(chan struct{})
	for i := range 32 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if i%2 == 0 {
					code := mint()
					mu.Lock()
					seen[code]++
					total++
					mu.Unlock()
					continue
				}
				r := httptest.NewRequest("GET", "/v1/", nil)
				r.Header.Set("Authorization", "Bearer "+m.Secret)
				serveGate(g, r)
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad() // also when a wait below fails
	// Enough answers on either side of the cleanup.
	waitFor := func(what string, n int) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, what, func() bool { return answered() >= n })
	}
	waitFor("64 mints answered before the cleanup", 64)
	if err := app.Cleanup(); err != nil {
		t.Error(err)
	}
	waitFor("64 more mints answered after the cleanup", answered()+64)
	stopLoad()
	for code := range seen {
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Errorf("answers by status %v: want only 200 and 503", seen)
		}
	}
	if seen[http.StatusOK] == 0 || seen[http.StatusServiceUnavailable] == 0 {
		t.Errorf("answers by status %v: want mints before the cleanup and refusals after", seen)
	}
}

// TestGateRefusesTwoDifferentKeys presents a valid key together with
// another value in every pair of places: refused, whatever the order; the
// same key in two places passes and is removed from both.
func TestGateRefusesTwoDifferentKeys(t *testing.T) {
	g, app, key := testGate(t, &APIKeyGate{Headers: []string{"X-Api-Key"}, QueryParam: "api_key", Body: true})
	other, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("mallory"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	type place func(r *http.Request, k string)
	bearer := func(r *http.Request, k string) { r.Header.Add("Authorization", "Bearer "+k) }
	header := func(r *http.Request, k string) { r.Header.Add("X-Api-Key", k) }
	query := func(r *http.Request, k string) {
		if r.URL.RawQuery != "" {
			r.URL.RawQuery += "&"
		}
		r.URL.RawQuery += "api_key=" + k
		r.RequestURI = r.URL.RequestURI()
	}
	body := func(r *http.Request, k string) {
		r.Body = io.NopCloser(strings.NewReader(`{"auth": {"api_key": "` + k + `"}}`))
		r.Header.Set("Content-Type", "application/json")
	}
	places := map[string]place{"bearer": bearer, "header": header, "query": query, "body": body}
	for an, a := range places {
		for bn, b := range places {
			if an == "body" && bn == "body" {
				continue
			}
			for _, second := range []string{other.Secret, "not-a-key"} {
				r := httptest.NewRequest("POST", "/v1/x", nil)
				a(r, key)
				b(r, second)
				if a := serveGate(g, r); a.admitted() || a.status != http.StatusUnauthorized {
					t.Errorf("valid key in %s, %.10s… in %s: admitted %v, %d", an, second, bn, a.admitted(), a.status)
				}
			}
			r := httptest.NewRequest("POST", "/v1/x", nil)
			a(r, key)
			b(r, key)
			a := serveGate(g, r)
			if !a.admitted() {
				t.Errorf("the same key in %s and %s: refused", an, bn)
				continue
			}
			if r := a.upstream; r.Header.Get("Authorization") != "" || r.Header.Get("X-Api-Key") != "" || strings.Contains(r.URL.RawQuery, key) || strings.Contains(r.RequestURI, key) {
				t.Errorf("the same key in %s and %s: not removed from every header and the query", an, bn)
			}
		}
	}
	for name, r := range map[string]*http.Request{
		"body repeating api_key in another case": func() *http.Request {
			r := httptest.NewRequest("POST", "/v1/x", strings.NewReader(`{"auth": {"api_key": "`+key+`", "API_KEY": "`+other.Secret+`"}}`))
			r.Header.Set("Content-Type", "application/json")
			return r
		}(),
		"key hidden behind ';'": func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/x?x=1;api_key="+other.Secret, nil)
			r.Header.Set("Authorization", "Bearer "+key)
			return r
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			if a := serveGate(g, r); a.admitted() {
				t.Errorf("%s: admitted", name)
			}
		})
	}
}

func TestGateStripsOnlyTheKeyFromTheQuery(t *testing.T) {
	g, _, key := testGate(t, &APIKeyGate{QueryParam: "api_key"})
	a := serveGate(g, httptest.NewRequest("GET", "/v1/a%2Fb?z=1&b=%2F&api_key="+key+"&a=1;c=2&e=x+y&api_key="+key, nil))
	if !a.admitted() {
		t.Fatal("refused")
	}
	if r, want := a.upstream, "z=1&b=%2F&a=1;c=2&e=x+y"; r.URL.RawQuery != want || r.RequestURI != "/v1/a%2Fb?"+want {
		t.Fatalf("after strip: RawQuery %q, RequestURI %q; want %q", r.URL.RawQuery, r.RequestURI, want)
	}
}

// The gate spends a key's credits on the requests it admits: they stay
// spent across a restart, and over them the request is refused with 429.
func TestGateSpendsCredits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	config := `{"store": ` + storeJSON(path) + `, "default_plan": "p", "plans": {"p": {"credits": {"amount": 3}}}}`
	start := func() (*App, func()) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		var app App
		if err := json.Unmarshal([]byte(config), &app); err != nil {
			t.Fatal(err)
		}
		if err := app.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return &app, func() { cancel(); _ = app.Cleanup() }
	}
	app, stop := start()
	m, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("svc"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	authenticate := func(app *App) bool {
		g := &APIKeyGate{}
		if err := g.setUp(app, zap.NewNop()); err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/v1/", nil)
		r.Header.Set("Authorization", "Bearer "+m.Secret)
		a := serveGate(g, r)
		if !a.admitted() && a.status != http.StatusTooManyRequests {
			t.Fatalf("refused with %d, want 429", a.status)
		}
		return a.admitted()
	}
	for i := range 3 {
		if !authenticate(app) {
			t.Fatalf("request %d of 3 credits refused", i+1)
		}
	}
	if authenticate(app) {
		t.Fatal("a 4th request on 3 credits admitted")
	}
	stop()
	app, stop = start()
	defer stop()
	if authenticate(app) {
		t.Fatal("after a restart, a request on 3 spent credits admitted")
	}
}
