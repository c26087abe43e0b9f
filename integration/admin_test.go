package integration

import (
	"encoding/json"
	"net/http"
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
	r = adminDo(t, "POST", "/keys", `{"user": "svc-backup", "title": "nightly", "scopes": ["write"]}`)
	var svc createdKey
	if err := json.Unmarshal([]byte(r.body), &svc); err != nil || r.status != 200 || svc.APIKey == "" {
		t.Fatalf("create service key: %d %s", r.status, r.body)
	}
	if got := do(t, http.MethodGet, gateway+"/v1/", "", "X-Api-Key", svc.APIKey); got.body[:15] != "user=svc-backup" {
		t.Fatalf("service key upstream saw %q", got.body)
	}
	r = adminDo(t, "GET", "/keys?user=svc-backup", "")
	if r.status != 200 || !strings.Contains(r.body, `"owner":"svc-backup"`) || strings.Contains(r.body, svc.APIKey) {
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
	for _, body := range []string{`{"title": "no user"}`, `{"user": "x", "scopes": ["bad scope"]}`, `{"user": "x", "colour": 1}`, `not json`} {
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
