package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

var (
	fetchPath  = gateway + "/api/fetch_api_keys"
	deletePath = gateway + "/api/delete_api_key"
	rotatePath = gateway + "/api/rotate_api_key"
)

const alicePW = `{"username": "alice", "password": "alicepw"}`

func startGatewayWith(t *testing.T, policy string) {
	t.Helper()
	initGateway(t, gatewayConfigWith(filepath.Join(t.TempDir(), "keys.db"), bcryptHash(t, "alicepw"), "test", policy))
}

type listedKey struct {
	ID         string   `json:"id"`
	Title      string   `json:"title"`
	Created    float64  `json:"created"`
	LastUsed   *float64 `json:"last_used"`
	KeyPreview string   `json:"key_preview"`
	Expires    *float64 `json:"expires"`
	Scopes     []string `json:"scopes"`
}

func fetchKeys(t *testing.T, auth string) []listedKey {
	t.Helper()
	return fetchKeysAt(t, gateway, auth)
}

// fetchKeysAt lists the caller's keys through the gateway at base.
func fetchKeysAt(t *testing.T, base, auth string) []listedKey {
	t.Helper()
	r := post(t, base+"/api/fetch_api_keys", `{"auth": `+auth+`}`)
	var env struct {
		Success bool `json:"success"`
		Result  struct {
			APIKeys []listedKey `json:"api_keys"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.body), &env); err != nil || r.status != 200 || !env.Success {
		t.Fatalf("fetch: %d %s", r.status, r.body)
	}
	if strings.Contains(r.body, `"api_key"`) || strings.Contains(r.body, "hash") {
		t.Fatalf("fetch reveals a key or hash: %s", r.body)
	}
	return env.Result.APIKeys
}

func keyWorks(t *testing.T, key string) bool {
	t.Helper()
	r := do(t, http.MethodGet, gateway+"/v1/", "", "X-Api-Key", key)
	return r.status == 200
}

func TestFetchDelete(t *testing.T) {
	startGateway(t)
	carol := `"` + hs256(t, map[string]any{"sub": "carol", "iss": "https://idp.test", "exp": time.Now().Add(time.Hour).Unix()}) + `"`
	var aliceKeys []createdKey
	for i := range 3 {
		aliceKeys = append(aliceKeys, decodeCreated(t, post(t, createPath, fmt.Sprintf(`{"auth": %s, "title": "k%d"}`, alicePW, i))))
	}
	carolKey := decodeCreated(t, post(t, createPath, `{"auth": `+carol+`}`))

	// Only the caller's keys, oldest first, the exact QueryLake fields.
	r := post(t, fetchPath, `{"auth": `+alicePW+`}`)
	if !strings.HasPrefix(r.body, `{"success":true,"result":{"api_keys":[{"id":"`+aliceKeys[0].ID+`","title":"k0","created":`) {
		t.Fatalf("fetch body %s", r.body)
	}
	listed := fetchKeys(t, alicePW)
	if len(listed) != 3 {
		t.Fatalf("alice sees %d keys", len(listed))
	}
	for i, k := range listed {
		if k.ID != aliceKeys[i].ID || k.Title != fmt.Sprintf("k%d", i) || k.KeyPreview != aliceKeys[i].KeyPreview || k.LastUsed != nil {
			t.Fatalf("listed[%d] = %+v, want %+v", i, k, aliceKeys[i])
		}
	}

	// last_used shows once the key is used.
	if !keyWorks(t, aliceKeys[1].APIKey) {
		t.Fatal("key refused")
	}
	if l := fetchKeys(t, alicePW); l[1].LastUsed == nil || l[0].LastUsed != nil {
		t.Fatalf("last_used after use: %+v", l)
	}

	// Delete: the very next request with the key is refused.
	r = post(t, deletePath, `{"auth": `+alicePW+`, "api_key_id": "`+aliceKeys[1].ID+`"}`)
	if r.status != 200 || r.body != `{"success":true}` {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if keyWorks(t, aliceKeys[1].APIKey) {
		t.Fatal("deleted key still works")
	}
	if len(fetchKeys(t, alicePW)) != 2 {
		t.Fatal("deleted key still listed")
	}

	// Unknown id and another user's key: the same 404.
	notFound := `{"success":false,"error":"API key not found"}`
	for name, id := range map[string]string{"unknown": "nosuchid", "deleted": aliceKeys[1].ID, "another user's": carolKey.ID} {
		r := post(t, deletePath, `{"auth": `+alicePW+`, "api_key_id": "`+id+`"}`)
		if r.status != 404 || r.body != notFound {
			t.Errorf("delete %s key: %d %s", name, r.status, r.body)
		}
	}
	if !keyWorks(t, carolKey.APIKey) {
		t.Fatal("carol's key was deleted by alice")
	}

	// API keys cannot manage keys.
	for path, verb := range map[string]string{fetchPath: "fetch", deletePath: "delete", rotatePath: "rotate"} {
		r := post(t, path, `{"auth": {"api_key": "`+aliceKeys[0].APIKey+`"}, "api_key_id": "`+aliceKeys[0].ID+`"}`)
		want := `{"success":false,"error":"API keys cannot be used to ` + verb + ` API keys."}`
		if r.status != 403 || r.body != want {
			t.Errorf("%s with an API key: %d %s", verb, r.status, r.body)
		}
	}
	for _, body := range []string{`{"auth": ` + alicePW + `}`, `{"auth": ` + alicePW + `, "api_key_id": 5}`} {
		if r := post(t, deletePath, body); r.status != 400 {
			t.Errorf("delete %s: %d %s", body, r.status, r.body)
		}
	}
}

func TestRotate(t *testing.T) {
	startGateway(t)
	old := decodeCreated(t, post(t, createPath, `{"auth": `+alicePW+`, "title": "ci"}`))

	// Without grace the old key dies at once.
	next := decodeCreated(t, post(t, rotatePath, `{"auth": `+alicePW+`, "api_key_id": "`+old.ID+`"}`))
	if next.ID == old.ID || next.Title != "ci" || next.APIKey == old.APIKey {
		t.Fatalf("rotated %+v", next)
	}
	if keyWorks(t, old.APIKey) || !keyWorks(t, next.APIKey) {
		t.Fatal("after rotation without grace: old must fail, new must work")
	}

	// With grace both work until it ends.
	third := decodeCreated(t, post(t, rotatePath, `{"auth": `+alicePW+`, "api_key_id": "`+next.ID+`", "grace_seconds": 1.5}`))
	if !keyWorks(t, next.APIKey) || !keyWorks(t, third.APIKey) {
		t.Fatal("within grace both keys must work")
	}
	testutil.Eventually(t, 10*time.Second, "the old key refused after a 1.5s grace", func() bool { return !keyWorks(t, next.APIKey) })
	if !keyWorks(t, third.APIKey) {
		t.Fatal("new key stopped with the old one")
	}
	listed := fetchKeys(t, alicePW)
	if len(listed) != 2 || listed[0].Expires == nil {
		t.Fatalf("after graceful rotation: %+v (the retired key shows its expiry)", listed)
	}
	for _, body := range []string{`"grace_seconds": -1`, `"grace_seconds": "10"`, `"grace_seconds": 99999999`} {
		r := post(t, rotatePath, `{"auth": `+alicePW+`, "api_key_id": "`+third.ID+`", `+body+`}`)
		if r.status != 400 {
			t.Errorf("rotate with %s: %d %s", body, r.status, r.body)
		}
	}
}

func TestExpiryScopesAndPolicy(t *testing.T) {
	startGatewayWith(t, "max_keys_per_user 3\n\t\tallowed_scopes read write\n\t\tmax_key_lifetime 24h")

	// expires_in and scopes appear only when asked for... except that a
	// maximum lifetime gives every key an expiry.
	k := decodeCreated(t, post(t, createPath, `{"auth": `+alicePW+`, "expires_in": 1, "scopes": ["write"]}`))
	r := post(t, fetchPath, `{"auth": `+alicePW+`}`)
	if !strings.Contains(r.body, `"expires":`) || !strings.Contains(r.body, `"scopes":["write"]`) {
		t.Fatalf("fetch: %s", r.body)
	}
	if !keyWorks(t, k.APIKey) {
		t.Fatal("fresh key refused")
	}
	if got := do(t, http.MethodGet, gateway+"/scoped/", "", "Authorization", "Bearer "+k.APIKey); got.status != 200 {
		t.Fatalf("scoped route with the scope: %d", got.status)
	}
	testutil.Eventually(t, 10*time.Second, "a key with expires_in 1 refused", func() bool { return !keyWorks(t, k.APIKey) })
	if got := do(t, http.MethodGet, gateway+"/v1/", "", "X-Api-Key", k.APIKey); got.status != 401 {
		t.Fatalf("expired key: %d, want 401", got.status)
	}

	// A key without the scope: 403 with insufficient_scope.
	reader := decodeCreated(t, post(t, createPath, `{"auth": `+alicePW+`, "scopes": ["read"]}`))
	got := do(t, http.MethodGet, gateway+"/scoped/", "", "Authorization", "Bearer "+reader.APIKey)
	if got.status != 403 || !strings.Contains(got.header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("scoped route without the scope: %d %q", got.status, got.header.Get("WWW-Authenticate"))
	}
	if got := do(t, http.MethodGet, gateway+"/scoped/", ""); got.status != 401 {
		t.Fatalf("scoped route without a key: %d", got.status)
	}

	// Limits: a third key is fine, a fourth is 409.
	decodeCreated(t, post(t, createPath, `{"auth": `+alicePW+`}`))
	r = post(t, createPath, `{"auth": `+alicePW+`}`)
	if r.status != 409 || !strings.Contains(r.body, "at most 3 keys") {
		t.Fatalf("fourth key: %d %s", r.status, r.body)
	}
	for _, body := range []string{`"scopes": ["admin"]`, `"scopes": "read"`, `"scopes": [""]`, `"expires_in": 0`, `"expires_in": 86401`, `"expires_in": "60"`} {
		r := post(t, createPath, `{"auth": {"username": "alice", "password": "alicepw"}, `+body+`}`)
		if r.status != 400 {
			t.Errorf("create with %s: %d %s", body, r.status, r.body)
		}
	}
}

func TestLockout(t *testing.T) {
	startGatewayWith(t, "lockout {\n\t\t\taccount_threshold 3\n\t\t\tduration 3s\n\t\t}")
	for _, user := range []string{"alice", "mallory-does-not-exist"} {
		wrong := `{"auth": {"username": "` + user + `", "password": "guess"}}`
		for i := range 3 {
			if r := post(t, createPath, wrong); r.status != 401 {
				t.Fatalf("%s attempt %d: %d %s", user, i+1, r.status, r.body)
			}
		}
		// Locked now, even with the right password; the answer is the
		// same whether or not the account exists.
		r := post(t, createPath, `{"auth": {"username": "`+user+`", "password": "alicepw"}}`)
		wait := r.header.Get("Retry-After")
		if r.status != 429 || (wait != "3" && wait != "2") ||
			r.body != `{"success":false,"error":"too many failed sign-in attempts; try again in `+wait+` seconds"}` {
			t.Fatalf("%s locked: %d Retry-After=%q %s", user, r.status, wait, r.body)
		}
	}
	// Both lockouts began before now and last 3s: alice is let in again
	// by then (the attempts refused meanwhile count as no failures).
	locked := time.Now()
	var r response
	testutil.Eventually(t, 30*time.Second, "alice's lockout ending", func() bool {
		sent := time.Now()
		r = post(t, createPath, `{"auth": `+alicePW+`}`)
		if r.status == 429 && sent.After(locked.Add(3100*time.Millisecond)) {
			t.Fatalf("alice still locked out more than %v after her 3s lockout began: %s", sent.Sub(locked), r.body)
		}
		return r.status != 429
	})
	decodeCreated(t, r)
	// A success resets the count: three more failures are needed.
	for range 2 {
		post(t, createPath, `{"auth": {"username": "alice", "password": "guess"}}`)
	}
	decodeCreated(t, post(t, createPath, `{"auth": `+alicePW+`}`))
}
