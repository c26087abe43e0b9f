package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	_ "github.com/caddy-apikeys/caddy-apikeys/caddymodule"
	"github.com/caddy-apikeys/caddy-apikeys/internal/loopback"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

const jwtSecret = "integration-secret-0123456789abcdef"

// The in-process gateway (caddytest) serves on a port this test binary
// listens on for its whole run and hands Caddy as one of its own file
// descriptors (bind fd/N; see package loopback), and so does the echo
// upstream behind it: no fixed port, and no port found free and lost
// before Caddy binds it. They are held until the process exits, since
// Caddy remembers a descriptor by its number.
var (
	gatewayPort, gatewayFD   = holdForRun()
	upstreamPort, upstreamFD = holdForRun()
	gateway                  = "http://" + gatewayPort.Addr
	createPath               = gateway + "/api/create_api_key"
)

// holdForRun holds a port for the rest of the process and returns it with
// its descriptor's number. (Fd also leaves the socket in blocking mode, as
// Caddy had better first find it: the file it keeps for the number then
// does not switch the shared socket to blocking at each reload.)
func holdForRun() (loopback.Port, uintptr) {
	p, err := loopback.Hold()
	if err != nil {
		panic(err)
	}
	return p, p.File.Fd()
}

// initGateway loads config into the in-process Caddy (caddytest). A
// previous config's server closes the idle connections the test's client
// holds to the same port: it starts on new ones (see loadConfig).
func initGateway(t *testing.T, config string) {
	t.Helper()
	caddytest.NewTester(t).InitServer(config, "caddyfile")
	client.CloseIdleConnections()
}

// gatewaySite opens the site block of the in-process gateway.
func gatewaySite() string {
	return fmt.Sprintf("%s {\n\tbind fd/%d", gateway, gatewayFD)
}

// gatewayConfig is a Caddyfile with the apikeys app on a bbolt file, a
// configured user alice (who may give keys the scopes read and write),
// HS256 JWTs, and /v1/* proxied to an upstream
// that echoes what it receives.
func gatewayConfig(dbPath, aliceHash, realm string) string {
	return gatewayConfigWith(dbPath, aliceHash, realm, "")
}

// caddytestGlobals are the global options every in-process config needs:
// caddytest's admin port.
const caddytestGlobals = `skip_install_trust
	admin localhost:2999
	grace_period 1ns`

// gatewayConfigWith adds policy lines to the apikeys block.
func gatewayConfigWith(dbPath, aliceHash, realm, policy string) string {
	return fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		user alice %s {
			scopes read write
		}
		jwt {
			secret %s
			issuer https://idp.test
			accept_any_audience
		}
		last_used_flush_interval 100ms
		%s
	}
}

%s
	apikeys_api /api/* {
		cors_origins https://app.test
	}
	apikey_auth /v1/* {
		header X-Api-Key
		realm %[9]q
	}
	apikey_auth /scoped/* {
		require_scopes write
	}
	reverse_proxy /scoped/* %[7]s
	reverse_proxy /v1/* %[7]s {
		header_up X-User {http.auth.user.id}
		header_up X-Key-Id {http.auth.user.key_id}
		header_up X-Key-Title {http.auth.user.key_title}
	}
}

http://%[7]s {
	bind fd/%[8]d
	respond "user={header.X-User} key_id={header.X-Key-Id} title={header.X-Key-Title} authorization={header.Authorization} x-api-key={header.X-Api-Key}"
}
`, caddytestGlobals, dbPath, aliceHash, jwtSecret, policy, gatewaySite(), upstreamPort.Addr, upstreamFD, realm)
}

func startGateway(t *testing.T) (dbPath string) {
	t.Helper()
	dbPath = filepath.Join(t.TempDir(), "keys.db")
	initGateway(t, gatewayConfig(dbPath, bcryptHash(t, "alicepw"), "test"))
	return dbPath
}

func hs256(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var seedShape = regexp.MustCompile(`^\{"success":true,"result":\{"api_key":"sk-[0-9A-Za-z]{48}","id":"[0-9A-Za-z]{32}","title":"[^"]*","created":\d+\.\d+,"last_used":null,"key_preview":"sk-\.\.\.[0-9A-Za-z]{4}"\}\}$`)

func TestCreateValidateReject(t *testing.T) {
	startGateway(t)

	before := float64(time.Now().UnixMicro()) / 1e6
	r := post(t, createPath, `{"auth": {"username": "alice", "password": "alicepw"}, "title": "API Key 1"}`)
	if !seedShape.MatchString(r.body) {
		t.Fatalf("response does not have the seed's exact shape: %s", r.body)
	}
	k := decodeCreated(t, r)
	if k.Title != "API Key 1" || k.KeyPreview != "sk-..."+k.APIKey[len(k.APIKey)-4:] || k.LastUsed != nil {
		t.Fatalf("created %+v", k)
	}
	if k.Created < before || k.Created > float64(time.Now().Unix()+1) {
		t.Fatalf("created %f is not now", k.Created)
	}
	if err := keystore.ParseKey(k.APIKey, "sk-"); err != nil {
		t.Fatalf("minted key fails its own checksum: %v", err)
	}

	// The key opens the protected route, from either header, and the
	// upstream learns the owner but never sees the key.
	for _, h := range [][]string{{"Authorization", "Bearer " + k.APIKey}, {"X-Api-Key", k.APIKey}} {
		got := do(t, http.MethodGet, gateway+"/v1/things", "", h...)
		want := fmt.Sprintf("user=alice key_id=%s title=API Key 1 authorization= x-api-key=", k.ID)
		if got.status != 200 || got.body != want {
			t.Fatalf("with %s: %d %q, want 200 %q", h[0], got.status, got.body, want)
		}
	}

	// Without a valid key: 401 with a Bearer challenge, upstream not called.
	typo := []byte(k.APIKey)
	typo[10] ^= 1
	unknown, _, _ := keystore.NewKeyAndID("sk-", time.Now())
	for name, h := range map[string][]string{
		"no key":       nil,
		"typo":         {"Authorization", "Bearer " + string(typo)},
		"unknown key":  {"X-Api-Key", unknown},
		"basic auth":   {"Authorization", "Basic YWxpY2U6YWxpY2Vwdw=="},
		"JWT":          {"Authorization", "Bearer " + hs256(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})},
		"key in query": nil,
	} {
		url := gateway + "/v1/things"
		if name == "key in query" {
			url += "?api_key=" + k.APIKey
		}
		got := do(t, http.MethodGet, url, "", h...)
		if got.status != 401 || strings.Contains(got.body, "user=") {
			t.Errorf("%s: %d %q, want 401 and no upstream call", name, got.status, got.body)
		}
		if ch := got.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer realm="test"`) {
			t.Errorf("%s: WWW-Authenticate %q", name, ch)
		}
	}
}

func TestCreateWithEachCredential(t *testing.T) {
	startGateway(t)
	token := hs256(t, jwt.MapClaims{"sub": "carol", "iss": "https://idp.test", "exp": time.Now().Add(time.Hour).Unix()})

	cases := []struct {
		name, body string
		headers    []string
		owner      string
	}{
		{"JWT string", `{"auth": "` + token + `"}`, nil, "carol"},
		{"QueryLake SDK oauth2 object", `{"auth": {"oauth2": "` + token + `"}}`, nil, "carol"},
		{"Basic header", ``, []string{"Authorization", "Basic YWxpY2U6YWxpY2Vwdw=="}, "alice"},
		{"Bearer JWT header", `{"title": "T"}`, []string{"Authorization", "Bearer " + token}, "carol"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := decodeCreated(t, post(t, createPath, c.body, c.headers...))
			got := do(t, http.MethodGet, gateway+"/v1/", "", "X-Api-Key", k.APIKey)
			if !strings.HasPrefix(got.body, "user="+c.owner+" ") {
				t.Errorf("%s: upstream saw %q, want owner %s", c.name, got.body, c.owner)
			}
			if c.body == "" && k.Title != "API Key" {
				t.Errorf("%s: default title %q", c.name, k.Title)
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	startGateway(t)
	k := decodeCreated(t, post(t, createPath, `{"auth": {"username": "alice", "password": "alicepw"}}`))
	expired := hs256(t, jwt.MapClaims{"sub": "carol", "iss": "https://idp.test", "exp": time.Now().Add(-time.Hour).Unix()})
	wrongIss := hs256(t, jwt.MapClaims{"sub": "carol", "iss": "https://evil.test", "exp": time.Now().Add(time.Hour).Unix()})

	cases := []struct {
		name    string
		method  string
		body    string
		headers []string
		status  int
		error   string
	}{
		{"API key object", "POST", `{"auth": {"api_key": "` + k.APIKey + `"}}`, nil, 403, "API keys cannot be used to create API keys."},
		{"API key string", "POST", `{"auth": "` + k.APIKey + `"}`, nil, 403, "API keys cannot be used to create API keys."},
		{"API key bearer", "POST", ``, []string{"Authorization", "Bearer " + k.APIKey}, 403, "API keys cannot be used to create API keys."},
		{"API key beats password", "POST", `{"auth": {"username": "alice", "password": "alicepw", "api_key": "x"}}`, nil, 403, "API keys cannot be used to create API keys."},
		{"wrong password", "POST", `{"auth": {"username": "alice", "password": "nope"}}`, nil, 401, "invalid username or password"},
		{"unknown user", "POST", `{"auth": {"username": "mallory", "password": "nope"}}`, nil, 401, "invalid username or password"},
		{"expired JWT", "POST", `{"auth": "` + expired + `"}`, nil, 401, "invalid OAuth2 token: token has expired"},
		{"wrong issuer", "POST", `{"auth": "` + wrongIss + `"}`, nil, 401, "invalid OAuth2 token: issuer is not accepted"},
		{"garbage JWT", "POST", `{"auth": "abc.def"}`, nil, 401, "invalid OAuth2 token: token is malformed"},
		{"no auth", "POST", `{"title": "x"}`, nil, 401, `missing "auth": send an OAuth2 token string or {"username": ..., "password": ...}`},
		{"auth is a number", "POST", `{"auth": 5}`, nil, 400, `"auth" must be an OAuth2 token string or an object {"username": ..., "password": ...}`},
		{"password missing", "POST", `{"auth": {"username": "alice"}}`, nil, 400, `"auth.password" is missing`},
		{"not JSON", "POST", `auth=alice`, nil, 400, "request body must be a JSON object"},
		{"truncated JSON", "POST", `{"auth": {"username": "alice"`, nil, 400, "request body is not valid JSON"},
		{"array body", "POST", `[1, 2]`, nil, 400, "request body must be a JSON object"},
		{"title not a string", "POST", `{"auth": {"username": "alice", "password": "alicepw"}, "title": 7}`, nil, 400, `"title" must be a string`},
		{"body too large", "POST", `{"title": "` + strings.Repeat("x", 70<<10) + `"}`, nil, 413, "request body is larger than the limit of 65536 bytes"},
		{"GET", "GET", ``, nil, 405, "method GET is not allowed; use POST"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, c.method, createPath, c.body, c.headers...)
			want, _ := json.Marshal(map[string]any{"success": false, "error": c.error})
			var got, exp map[string]any
			_ = json.Unmarshal(want, &exp)
			if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != c.status || fmt.Sprint(got) != fmt.Sprint(exp) {
				t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.body, c.status, want)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", c.name, ct)
			}
			if c.status == 405 && r.header.Get("Allow") != "POST" {
				t.Errorf("%s: Allow %q", c.name, r.header.Get("Allow"))
			}
		})
	}
}

func TestStoredUserAndReload(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "keys.db")
	// A user kept in the store, written before Caddy opens the file.
	s, err := boltstore.Open(dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(context.Background(), keystore.User{Name: "dave", PasswordHash: bcryptHash(t, "davepw"), Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	aliceHash := bcryptHash(t, "alicepw")
	initGateway(t, gatewayConfig(dbPath, aliceHash, "one"))
	k := decodeCreated(t, post(t, createPath, `{"auth": {"username": "dave", "password": "davepw"}}`))

	// Each reload provisions a new config on the same file while the old
	// one still holds it; nothing may deadlock, and keys stay valid.
	for i := range 5 {
		initGateway(t, gatewayConfig(dbPath, aliceHash, fmt.Sprintf("reload-%d", i)))
		got := do(t, http.MethodGet, gateway+"/v1/", "", "X-Api-Key", k.APIKey)
		if got.status != 200 || !strings.HasPrefix(got.body, "user=dave ") {
			t.Fatalf("after reload %d: %d %q", i, got.status, got.body)
		}
		decodeCreated(t, post(t, createPath, `{"auth": {"username": "alice", "password": "alicepw"}}`))
	}

	// last_used was recorded in memory and flushed: a config switch to
	// another file releases this one, so it can be read directly.
	initGateway(t, gatewayConfig(filepath.Join(t.TempDir(), "other.db"), aliceHash, "x"))
	s, err = boltstore.Open(dbPath, time.Second)
	if err != nil {
		t.Fatalf("file still locked after the config using it was replaced: %v", err)
	}
	defer s.Close()
	keys, err := s.KeysByOwner(context.Background(), keystore.PasswordUser("dave"))
	if err != nil || len(keys) != 1 || keys[0].LastUsed.IsZero() {
		t.Fatalf("dave's keys after unload: %+v, %v", keys, err)
	}
	if alice, _ := s.KeysByOwner(context.Background(), keystore.PasswordUser("alice")); len(alice) != 5 {
		t.Fatalf("alice has %d keys, want 5", len(alice))
	}
}
