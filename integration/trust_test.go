package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The two identity providers of the trust tests, each with its own secret.
const (
	idpA       = "https://idp-a.test"
	idpB       = "https://idp-b.test"
	idpC       = "https://idp-c.test" // its identities are the password users
	idpASecret = "identity-provider-a-secret-0123456789"
	idpBSecret = "identity-provider-b-secret-0123456789"
	idpCSecret = "identity-provider-c-secret-0123456789"
)

// trustGateway is the real binary on a config with password users of
// both kinds (config and stored), two token issuers whose users may
// share names with them, scopes and a key cap.
type trustGateway struct {
	*runningCaddy
	dir, admin, base, config string
	ports                    []heldPort
}

// trustConfig is that config; users lists the config users' lines, so
// that a reload can remove one.
// The site is on ports[0] (fd/3), admin on ports[1] (fd/4).
func trustConfig(t *testing.T, dir, db string, ports []heldPort, users ...string) string {
	t.Helper()
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		allowed_scopes read write admin
		max_keys_per_user 2
		%s
		jwt {
			secret %s
			issuer %s
			audience gateway
			allowed_scopes read
			max_key_lifetime 24h
		}
		jwt {
			secret %s
			issuer %s
			audience gateway
			token_type at+jwt
		}
		jwt {
			secret %s
			issuer %s
			audience gateway
			namespace password
		}
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/* {
		header X-Api-Key
	}
	respond /v1/* "user={http.auth.user.id} source={http.auth.user.source}"
	apikey_auth /admin/* {
		require_scopes admin
	}
	respond /admin/* "admin"
}
`, adminOption(ports[1], 4), db, strings.Join(users, "\n\t\t"), idpASecret, idpA, idpBSecret, idpB, idpCSecret, idpC, ports[0].Addr)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startTrustGateway(t *testing.T, users ...string) *trustGateway {
	t.Helper()
	dir := t.TempDir()
	ports := holdPorts(t, 2)
	g := &trustGateway{dir: dir, admin: ports[1].Addr, base: "http://" + ports[0].Addr, ports: ports}
	g.config = trustConfig(t, dir, filepath.Join(dir, "keys.db"), ports, users...)
	g.runningCaddy = startBinary(t, g.config, dir, ports)
	return g
}

// reload loads a new config with these config users through the admin
// API, as `caddy reload` does.
func (g *trustGateway) reload(t *testing.T, users ...string) {
	t.Helper()
	cfg := trustConfig(t, g.dir, filepath.Join(g.dir, "keys.db"), g.ports, users...)
	loadConfig(t, g.admin, string(mustRead(t, cfg)))
}

func (g *trustGateway) call(t *testing.T, endpoint, body string) response {
	t.Helper()
	return post(t, g.base+"/api/"+endpoint, body)
}

func (g *trustGateway) adminCall(t *testing.T, method, path, body string) response {
	t.Helper()
	return do(t, method, "http://"+g.admin+"/apikeys"+path, body, "Origin", "http://"+g.admin)
}

// upstream returns what the upstream was told about the caller of key, or
// "" when the request was refused.
func (g *trustGateway) upstream(t *testing.T, key string) string {
	t.Helper()
	r := do(t, http.MethodGet, g.base+"/v1/x", "", "X-Api-Key", key)
	if r.status != 200 {
		return ""
	}
	return r.body
}

func (g *trustGateway) keys(t *testing.T, auth string) []listedKey {
	t.Helper()
	r := g.call(t, "fetch_api_keys", `{"auth": `+auth+`}`)
	if r.status != 200 {
		t.Fatalf("fetch_api_keys: %d %s", r.status, r.body)
	}
	var env struct {
		Result struct {
			APIKeys []listedKey `json:"api_keys"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.body), &env); err != nil {
		t.Fatal(err)
	}
	return env.Result.APIKeys
}

// token signs an access token of an issuer for sub, with claims added.
func token(t *testing.T, issuer, secret, sub string, claims jwt.MapClaims, header ...string) string {
	t.Helper()
	c := jwt.MapClaims{"iss": issuer, "sub": sub, "aud": "gateway", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	for i := 0; i+1 < len(header); i += 2 {
		tok.Header[header[i]] = header[i+1]
	}
	s, err := tok.SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func quoted(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestIdentitySourcesNeverShareOwners: an identity provider on which
// anyone can pick the name "alice" gets its own alice, not the password
// user's keys, and two providers' alices are two owners as well.
func TestIdentitySourcesNeverShareOwners(t *testing.T) {
	g := startTrustGateway(t, "user alice "+bcryptHash(t, "alicepw"))
	alicePW := `{"username": "alice", "password": "alicepw"}`
	aTok := quoted(token(t, idpA, idpASecret, "alice", nil))
	bTok := quoted(token(t, idpB, idpBSecret, "alice", nil, "typ", "at+jwt"))

	mine := decodeCreated(t, g.call(t, "create_api_key", `{"auth": `+alicePW+`}`))
	fromA := decodeCreated(t, g.call(t, "create_api_key", `{"auth": `+aTok+`}`))
	fromB := decodeCreated(t, g.call(t, "create_api_key", `{"auth": `+bTok+`}`))
	for key, want := range map[string]string{
		mine.APIKey:  "user=alice source=password",
		fromA.APIKey: "user=alice source=jwt:" + idpA,
		fromB.APIKey: "user=alice source=jwt:" + idpB,
	} {
		if got := g.upstream(t, key); got != want {
			t.Errorf("upstream told %q, want %q", got, want)
		}
	}
	// Each alice sees, rotates and deletes only her own keys.
	for auth, own := range map[string]string{alicePW: mine.ID, aTok: fromA.ID, bTok: fromB.ID} {
		listed := g.keys(t, auth)
		if len(listed) != 1 || listed[0].ID != own {
			t.Fatalf("%.20s… lists %+v, want only %s", auth, listed, own)
		}
	}
	for _, endpoint := range []string{"rotate_api_key", "delete_api_key"} {
		for _, id := range []string{mine.ID, fromB.ID} {
			if r := g.call(t, endpoint, `{"auth": `+aTok+`, "api_key_id": "`+id+`"}`); r.status != 404 {
				t.Fatalf("%s of another alice's key with A's token: %d %s", endpoint, r.status, r.body)
			}
		}
	}
	for _, k := range []createdKey{mine, fromA, fromB} {
		if g.upstream(t, k.APIKey) == "" {
			t.Fatal("a key stopped working after another alice's attempts")
		}
	}
	// Keys of token identities expire within their issuer's cap (A: 24h;
	// B: the default, 90 days); the password user's never.
	listed := g.keys(t, aTok)
	if listed[0].Expires == nil || *listed[0].Expires > float64(time.Now().Add(24*time.Hour+time.Minute).Unix()) {
		t.Fatalf("A's key expires %v, want within 24h", listed[0].Expires)
	}
	if listed := g.keys(t, bTok); listed[0].Expires == nil || *listed[0].Expires > float64(time.Now().Add(90*24*time.Hour+time.Minute).Unix()) {
		t.Fatalf("B's key expires %v, want within 90 days", listed[0].Expires)
	}
	if listed := g.keys(t, alicePW); listed[0].Expires != nil {
		t.Fatalf("the password user's key expires %v", *listed[0].Expires)
	}
	// Issuer B wants access tokens: an ID token (another typ) is refused.
	idTok := token(t, idpB, idpBSecret, "alice", nil, "typ", "JWT")
	if r := g.call(t, "create_api_key", `{"auth": `+quoted(idTok)+`}`); r.status != 401 || !strings.Contains(r.body, "token type") {
		t.Fatalf("ID token at an issuer that wants at+jwt: %d %s", r.status, r.body)
	}
	// A token for another audience is refused.
	other := token(t, idpA, idpASecret, "alice", jwt.MapClaims{"aud": "another-app"})
	if r := g.call(t, "create_api_key", `{"auth": `+quoted(other)+`}`); r.status != 401 || !strings.Contains(r.body, "audience") {
		t.Fatalf("token for another audience: %d %s", r.status, r.body)
	}
	// An operator revokes every key of A's alice, and only those.
	decodeCreated(t, g.call(t, "create_api_key", `{"auth": `+aTok+`}`))
	out := mustCLI(t, "", "--address", g.admin, "key", "revoke", "--user", "alice", "--source", "jwt:"+idpA)
	if !strings.Contains(out, `2 keys of "alice" (jwt:`+idpA+") revoked") {
		t.Fatalf("key revoke --user --source:\n%s", out)
	}
	if g.upstream(t, fromA.APIKey) != "" || g.upstream(t, mine.APIKey) == "" || g.upstream(t, fromB.APIKey) == "" {
		t.Fatal("revoking A's alice did the wrong thing")
	}
}

// TestScopesAreEntitlements: nobody grants themselves a scope, through any
// credential, and the upstream's require_scopes holds.
func TestScopesAreEntitlements(t *testing.T) {
	g := startTrustGateway(t,
		"user alice "+bcryptHash(t, "alicepw")+" {\n\t\t\tscopes read write\n\t\t}",
		"user bob "+bcryptHash(t, "bobpw"))
	mustCLI(t, "carolpw\n", "--address", g.admin, "user", "add", "carol", "--scopes", "read")
	mint := func(t *testing.T, auth, scopes string) response {
		return g.call(t, "create_api_key", `{"auth": `+auth+`, "scopes": [`+scopes+`]}`)
	}
	refused := func(r response, scope string) bool {
		return r.status == 403 && strings.Contains(r.body, `\"`+scope+`\"`)
	}
	aTok := func(scope string) string {
		return quoted(token(t, idpA, idpASecret, "dave", jwt.MapClaims{"scope": scope}))
	}
	for _, tc := range []struct {
		name, auth, ask, refuse string
	}{
		{"config user within grants", `{"username": "alice", "password": "alicepw"}`, `"read", "write"`, ""},
		{"config user beyond grants", `{"username": "alice", "password": "alicepw"}`, `"admin"`, "admin"},
		{"config user without grants", `{"username": "bob", "password": "bobpw"}`, `"read"`, "read"},
		{"stored user within grants", `{"username": "carol", "password": "carolpw"}`, `"read"`, ""},
		{"stored user beyond grants", `{"username": "carol", "password": "carolpw"}`, `"write"`, "write"},
		{"token scope the issuer allows", aTok("read write"), `"read"`, ""},
		{"token scope the issuer does not allow", aTok("read write"), `"write"`, "write"},
		{"scope the token lacks", aTok("openid"), `"read"`, "read"},
		{"issuer without allowed_scopes", quoted(token(t, idpB, idpBSecret, "erin", jwt.MapClaims{"scope": "admin"}, "typ", "at+jwt")), `"admin"`, "admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mint(t, tc.auth, tc.ask)
			if tc.refuse == "" && r.status != 200 || tc.refuse != "" && !refused(r, tc.refuse) {
				t.Errorf("%s asking for %s: %d %s", tc.name, tc.ask, r.status, r.body)
			}
		})
	}
	// Basic credentials are held to the same grants.
	r := post(t, g.base+"/api/create_api_key", `{"scopes": ["admin"]}`, "Authorization", "Basic YWxpY2U6YWxpY2Vwdw==")
	if !refused(r, "admin") {
		t.Fatalf("Basic credentials asking for admin: %d %s", r.status, r.body)
	}
	// Operators may give any scope of the vocabulary: the only way to
	// the admin route.
	r = g.adminCall(t, "POST", "/keys", `{"service": "ops", "scopes": ["admin"]}`)
	var ops createdKey
	if err := json.Unmarshal([]byte(r.body), &ops); err != nil || r.status != 200 {
		t.Fatalf("operator key with admin: %d %s", r.status, r.body)
	}
	if got := do(t, http.MethodGet, g.base+"/admin/x", "", "Authorization", "Bearer "+ops.APIKey); got.status != 200 {
		t.Fatalf("admin route with the operator's key: %d", got.status)
	}
	for _, auth := range []string{`{"username": "alice", "password": "alicepw"}`, aTok("read write")} {
		for _, k := range g.keys(t, auth) {
			if strings.Contains(strings.Join(k.Scopes, " "), "admin") {
				t.Fatalf("a signed-in user holds an admin key: %+v", k)
			}
		}
	}
}

// TestRotationNeverRevivesOrMultipliesKeys: an operator's disabling
// holds against the owner's rotations, and rotations with grace, however
// many at once, never leave more working keys than the cap.
func TestRotationNeverRevivesOrMultipliesKeys(t *testing.T) {
	g := startTrustGateway(t, "user alice "+bcryptHash(t, "alicepw"))
	auth := `{"username": "alice", "password": "alicepw"}`
	k := decodeCreated(t, g.call(t, "create_api_key", `{"auth": `+auth+`}`))
	if r := g.adminCall(t, "POST", "/keys/"+k.ID+"/disable", ""); r.status != 200 {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	for _, grace := range []string{"0", "3600"} {
		r := g.call(t, "rotate_api_key", `{"auth": `+auth+`, "api_key_id": "`+k.ID+`", "grace_seconds": `+grace+`}`)
		if r.status != 403 || !strings.Contains(r.body, "disabled") {
			t.Fatalf("owner rotates a disabled key (grace %s): %d %s", grace, r.status, r.body)
		}
	}
	if listed := g.keys(t, auth); len(listed) != 1 || g.upstream(t, k.APIKey) != "" {
		t.Fatalf("after refused rotations: %+v", listed)
	}
	if r := g.call(t, "delete_api_key", `{"auth": `+auth+`, "api_key_id": "`+k.ID+`"}`); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}

	// max_keys_per_user is 2. One key, rotated with grace by 8 clients at
	// once: one rotation fits (old key in grace + new key = 2), the others
	// are refused, as is any rotation of the key in grace.
	k = decodeCreated(t, g.call(t, "create_api_key", `{"auth": `+auth+`}`))
	var wg sync.WaitGroup
	statuses := make(chan int, 8)
	for range 8 {
		wg.Go(func() {
			statuses <- g.call(t, "rotate_api_key", `{"auth": `+auth+`, "api_key_id": "`+k.ID+`", "grace_seconds": 3600}`).status
		})
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[200] != 1 || count[409] != 7 {
		t.Fatalf("8 concurrent rotations with grace: %v, want one 200 and seven 409", count)
	}
	listed := g.keys(t, auth)
	working := 0
	for _, l := range listed {
		if l.ID == k.ID {
			working++ // in grace: works for an hour
			continue
		}
		if r := g.call(t, "rotate_api_key", `{"auth": `+auth+`, "api_key_id": "`+l.ID+`", "grace_seconds": 60}`); r.status != 409 || !strings.Contains(r.body, "grace period") {
			t.Fatalf("rotation with grace at the cap: %d %s", r.status, r.body)
		}
		working++
	}
	if len(listed) != 2 || working != 2 || g.upstream(t, k.APIKey) == "" {
		t.Fatalf("alice holds %d keys after the rotations: %+v", len(listed), listed)
	}
	if r := g.call(t, "create_api_key", `{"auth": `+auth+`}`); r.status != 409 {
		t.Fatalf("a third key beside a key in grace: %d %s", r.status, r.body)
	}
}

// TestKeysDoNotOutliveTheirOwners: a config user removed by a reload has
// their keys refused at the next request, shown as orphaned, and back when
// declared again; a stored user's removal deletes theirs.
func TestKeysDoNotOutliveTheirOwners(t *testing.T) {
	alice := "user alice " + bcryptHash(t, "alicepw")
	bob := "user bob " + bcryptHash(t, "bobpw")
	g := startTrustGateway(t, alice, bob)
	aliceKey := decodeCreated(t, g.call(t, "create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`))
	// Issuer C's tokens act as the password users of the same name.
	cTok := quoted(token(t, idpC, idpCSecret, "alice", nil))
	if listed := g.keys(t, cTok); len(listed) != 1 || listed[0].ID != aliceKey.ID {
		t.Fatalf("C's alice lists %+v, want the password user's key", listed)
	}
	bobKey := decodeCreated(t, g.call(t, "create_api_key", `{"auth": {"username": "bob", "password": "bobpw"}}`))
	for _, k := range []createdKey{aliceKey, bobKey} {
		if g.upstream(t, k.APIKey) == "" { // cached
			t.Fatal("fresh key refused")
		}
	}
	g.reload(t, bob)
	if got := g.upstream(t, aliceKey.APIKey); got != "" {
		t.Fatalf("the key of a user removed from the config: %q", got)
	}
	if g.upstream(t, bobKey.APIKey) == "" {
		t.Fatal("the remaining user's key stopped working")
	}
	r := g.adminCall(t, "GET", "/keys?user=alice", "")
	if r.status != 200 || !strings.Contains(r.body, `"orphaned":true`) {
		t.Fatalf("admin listing of the removed user's key: %d %s", r.status, r.body)
	}
	if out := mustCLI(t, "", "--address", g.admin, "key", "list"); !strings.Contains(out, "orphaned") {
		t.Fatalf("key list:\n%s", out)
	}
	if r := g.call(t, "create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`); r.status != 401 {
		t.Fatalf("the removed user signs in: %d", r.status)
	}
	// A token still naming her reaches none of her keys.
	for _, endpoint := range []string{"fetch_api_keys", "create_api_key", "delete_api_key"} {
		if r := g.call(t, endpoint, `{"auth": `+cTok+`, "api_key_id": "`+aliceKey.ID+`"}`); r.status != 401 {
			t.Fatalf("%s with a token for the removed user: %d %s", endpoint, r.status, r.body)
		}
	}
	// A new stored user of that name does not inherit her keys unless the
	// operator says it is her.
	r = g.adminCall(t, "POST", "/users", `{"username": "alice", "password": "someone-else"}`)
	if r.status != 409 || !strings.Contains(r.body, "adopt") {
		t.Fatalf("adding a user whose name has orphaned keys: %d %s", r.status, r.body)
	}
	if g.upstream(t, aliceKey.APIKey) != "" {
		t.Fatal("the orphaned key works after the refused user add")
	}
	if r := g.adminCall(t, "POST", "/keys", `{"user": "alice"}`); r.status != 404 {
		t.Fatalf("an operator mints for the removed user: %d %s", r.status, r.body)
	}
	g.reload(t, alice, bob)
	if g.upstream(t, aliceKey.APIKey) == "" {
		t.Fatal("the key of a user declared again is still refused")
	}
	// A name the config declares cannot be stored too.
	if r := g.adminCall(t, "POST", "/users", `{"username": "bob", "password": "x"}`); r.status != 409 || !strings.Contains(r.body, "declared in the config") {
		t.Fatalf("storing a config user: %d %s", r.status, r.body)
	}
}

// TestNamesAreValidatedForEverySource: an identity with a NUL (or any
// control character) is refused at sign-in, and the neighbour whose name
// it extends keeps a working listing.
func TestNamesAreValidatedForEverySource(t *testing.T) {
	g := startTrustGateway(t)
	carol := quoted(token(t, idpA, idpASecret, "carol", nil))
	decodeCreated(t, g.call(t, "create_api_key", `{"auth": `+carol+`}`))
	for _, evil := range []string{"carol\x00x", "carol\x1fx", "carol\nx", strings.Repeat("c", 129)} {
		tok := quoted(token(t, idpA, idpASecret, evil, nil))
		if r := g.call(t, "create_api_key", `{"auth": `+tok+`}`); r.status != 401 || !strings.Contains(r.body, "not a valid user name") {
			t.Fatalf("identity %q: %d %s", evil, r.status, r.body)
		}
	}
	for _, evil := range []string{`"carol\u0000x"`, `"carol\u001fx"`, `"\u200b\u0007"`} {
		r := g.call(t, "create_api_key", `{"auth": {"username": `+evil+`, "password": "x"}}`)
		if r.status != 400 {
			t.Fatalf("username %s: %d %s", evil, r.status, r.body)
		}
	}
	if listed := g.keys(t, carol); len(listed) != 1 {
		t.Fatalf("carol's listing: %+v", listed)
	}
	// And from the operator's side.
	for _, body := range []string{`{"username": "a\u0000b", "password": "x"}`, `{"username": "", "password": "x"}`} {
		if r := g.adminCall(t, "POST", "/users", body); r.status != 400 {
			t.Fatalf("add user %s: %d %s", body, r.status, r.body)
		}
	}
}

// TestJWTBlockWithoutAudienceDoesNotLoad runs `caddy validate` and `caddy
// run` on a config whose jwt block names no audience.
func TestJWTBlockWithoutAudienceDoesNotLoad(t *testing.T) {
	bin := caddyBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	cfg := "{\n\tadmin off\n\tapikeys {\n\t\tstore bolt " + filepath.Join(dir, "k.db") +
		"\n\t\tjwt {\n\t\t\tsecret " + idpASecret + "\n\t\t\tissuer " + idpA + "\n\t\t}\n\t}\n}\n:0 {\n\trespond ok\n}\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"validate", "run"} {
		cmd := exec.Command(bin, verb, "--config", path)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
		out, err := exitsPromptly(t, cmd)
		if err == nil || !strings.Contains(string(out), "no audience") || !strings.Contains(string(out), "accept_any_audience") {
			t.Fatalf("caddy %s: %v\n%s", verb, err, out)
		}
	}
}
