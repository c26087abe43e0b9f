package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

const adminAPI = "http://localhost:2999/apikeys"

func adminDo(t *testing.T, method, path, body string) response {
	t.Helper()
	// Caddy's admin endpoint checks the Origin of requests with a body.
	return do(t, method, adminAPI+path, body, "Origin", "http://localhost:2999")
}

func TestAdminAPI(t *testing.T) {
	startGateway(t)

	// Users: add, log in with the new password, change it.
	if r := adminDo(t, "POST", "/users", `{"username": "erin", "password": "erinpw"}`); r.status != 204 {
		t.Fatalf("add user: %d %s", r.status, r.body)
	}
	if r := adminDo(t, "POST", "/users", `{"username": "erin", "password": "x"}`); r.status != 409 {
		t.Fatalf("add user twice: %d %s", r.status, r.body)
	}
	erinKey := decodeCreated(t, post(t, createPath, `{"auth": {"username": "erin", "password": "erinpw"}}`))
	if r := adminDo(t, "PUT", "/users/erin/password", `{"password": "newpw"}`); r.status != 204 {
		t.Fatalf("set password: %d %s", r.status, r.body)
	}
	if r := post(t, createPath, `{"auth": {"username": "erin", "password": "erinpw"}}`); r.status != 401 {
		t.Fatalf("old password still works: %d", r.status)
	}
	decodeCreated(t, post(t, createPath, `{"auth": {"username": "erin", "password": "newpw"}}`))
	r := adminDo(t, "GET", "/users", "")
	if r.status != 200 || !strings.Contains(r.body, `"username":"erin"`) || strings.Contains(r.body, "argon2") {
		t.Fatalf("list users: %d %s", r.status, r.body)
	}

	// Service keys: create, list, disable, enable, revoke.
	if r := adminDo(t, "POST", "/keys", `{"user": "svc-backup", "title": "nightly"}`); r.status != 404 || !strings.Contains(r.body, "service") {
		t.Fatalf("create a key for a password user that does not exist: %d %s", r.status, r.body)
	}
	r = adminDo(t, "POST", "/keys", `{"service": "svc-backup", "title": "nightly", "scopes": ["write"]}`)
	var svc createdKey
	if err := json.Unmarshal([]byte(r.body), &svc); err != nil || r.status != 200 || svc.APIKey == "" {
		t.Fatalf("create service key: %d %s", r.status, r.body)
	}
	if got := do(t, http.MethodGet, gateway+"/v1/", "", "X-Api-Key", svc.APIKey); got.body[:15] != "user=svc-backup" {
		t.Fatalf("service key upstream saw %q", got.body)
	}
	r = adminDo(t, "GET", "/keys?service=svc-backup", "")
	if r.status != 200 || !strings.Contains(r.body, `"owner":"svc-backup","source":"service"`) || strings.Contains(r.body, svc.APIKey) {
		t.Fatalf("list keys: %d %s", r.status, r.body)
	}
	if r := adminDo(t, "POST", "/keys/"+svc.ID+"/disable", ""); r.status != 200 || !strings.Contains(r.body, `"disabled":true`) {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	if keyWorks(t, svc.APIKey) {
		t.Fatal("disabled key works")
	}
	if r := adminDo(t, "POST", "/keys/"+svc.ID+"/enable", ""); r.status != 200 {
		t.Fatalf("enable: %d %s", r.status, r.body)
	}
	if !keyWorks(t, svc.APIKey) {
		t.Fatal("re-enabled key refused")
	}
	if r := adminDo(t, "DELETE", "/keys/"+svc.ID, ""); r.status != 204 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if keyWorks(t, svc.APIKey) {
		t.Fatal("revoked key works")
	}
	for path, method := range map[string]string{"/keys/nosuch": "DELETE", "/keys/nosuch/disable": "POST", "/users/nobody": "DELETE"} {
		if r := adminDo(t, method, path, ""); r.status != 404 {
			t.Errorf("%s %s: %d %s", method, path, r.status, r.body)
		}
	}
	for _, body := range []string{`{"title": "no user"}`, `{"service": "x", "scopes": ["bad scope"]}`, `{"service": "x", "colour": 1}`,
		`{"user": "alice", "service": "x"}`, `{"service": "a\u0000b"}`, `not json`} {
		if r := adminDo(t, "POST", "/keys", body); r.status != 400 {
			t.Errorf("create key %s: %d %s", body, r.status, r.body)
		}
	}

	// Removing a user revokes all their keys.
	r = adminDo(t, "DELETE", "/users/erin", "")
	if r.status != 200 || r.body != `{"keys_revoked":2}` {
		t.Fatalf("remove user: %d %s", r.status, r.body)
	}
	if keyWorks(t, erinKey.APIKey) {
		t.Fatal("removed user's key works")
	}
}

// A user whose name holds "/" (or "%", "?") is managed like any other:
// path segments are escaped.
func TestAdminAPIUserNamesNeedingEscapes(t *testing.T) {
	startGateway(t)
	for _, name := range []string{"team/ci", "50%off", "what?", "é à"} {
		esc := url.PathEscape(name)
		body, _ := json.Marshal(map[string]string{"username": name, "password": "pw-" + name})
		if r := adminDo(t, "POST", "/users", string(body)); r.status != 204 {
			t.Fatalf("add %q: %d %s", name, r.status, r.body)
		}
		auth, _ := json.Marshal(map[string]any{"auth": map[string]string{"username": name, "password": "pw-" + name}})
		k := decodeCreated(t, post(t, createPath, string(auth)))
		if r := adminDo(t, "PUT", "/users/"+esc+"/password", `{"password": "new"}`); r.status != 204 {
			t.Fatalf("set the password of %q: %d %s", name, r.status, r.body)
		}
		if r := adminDo(t, "PUT", "/users/"+esc+"/scopes", `{"scopes": ["write"]}`); r.status != 200 {
			t.Fatalf("set the scopes of %q: %d %s", name, r.status, r.body)
		}
		if r := adminDo(t, "GET", "/keys?user="+url.QueryEscape(name), ""); r.status != 200 || !strings.Contains(r.body, k.ID) {
			t.Fatalf("list the keys of %q: %d %s", name, r.status, r.body)
		}
		if r := adminDo(t, "DELETE", "/users/"+esc, ""); r.status != 200 || r.body != `{"keys_revoked":1}` {
			t.Fatalf("remove %q: %d %s", name, r.status, r.body)
		}
		if keyWorks(t, k.APIKey) {
			t.Fatalf("the key of removed %q works", name)
		}
	}
}
