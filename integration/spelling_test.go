package integration

import (
	"net/http"
	"strings"
	"testing"
)

// TestOneSpellingOfEveryRequest runs the real binary with keys accepted
// in Authorization, X-Api-Key, the api_key query parameter and the body:
// a request that could be read two ways is refused, and removing the key
// from the query leaves the rest of it byte for byte.
func TestOneSpellingOfEveryRequest(t *testing.T) {
	g := startHardened(t, "", "")
	alice := g.mint(t, `{"username": "alice", "password": "alicepw"}`).APIKey
	other := g.mint(t, `{"username": "alice", "password": "alicepw"}`).APIKey

	t.Run("members repeated in another letter case", func(t *testing.T) {
		for _, body := range []string{
			`{"auth": "not-a-token", "AUTH": {"username": "alice", "password": "alicepw"}}`,
			`{"auth": {"username": "mallory", "Username": "alice", "password": "alicepw"}}`,
			`{"auth": {"username": "alice", "password": "alicepw"}, "title": "a", "TITLE": "b"}`,
			`{"auth": {"username": "alice", "password": "alicepw"}, "scopes": [], "ſcopes": ["admin"]}`,
		} {
			r := post(t, g.base+"/api/create_api_key", body)
			if r.status != 400 || !strings.Contains(r.body, "more than once") {
				t.Errorf("%s: %d %s, want 400", body, r.status, r.body)
			}
		}
	})

	t.Run("the query reaches the upstream as sent, less the key", func(t *testing.T) {
		const rest = "z=1&b=%2F&a=1;c=2&e=x+y&f=%C3%A9"
		r := do(t, http.MethodGet, g.base+"/v1/x?z=1&b=%2F&api_key="+alice+"&a=1;c=2&e=x+y&f=%C3%A9", "")
		if r.status != 200 || r.body != "user=alice uri=/v1/x?"+rest {
			t.Fatalf("%d %q, want the upstream to see ?%s", r.status, r.body, rest)
		}
	})

	t.Run("two different keys", func(t *testing.T) {
		type req struct {
			name, url, body string
			headers         []string
		}
		for _, c := range []req{
			{"bearer and X-Api-Key", "/v1/x", "", []string{"Authorization", "Bearer " + alice, "X-Api-Key", other}},
			{"X-Api-Key and bearer", "/v1/x", "", []string{"X-Api-Key", alice, "Authorization", "Bearer " + other}},
			{"bearer and query", "/v1/x?api_key=" + other, "", []string{"Authorization", "Bearer " + alice}},
			{"query twice", "/v1/x?api_key=" + alice + "&api_key=" + other, "", nil},
			{"query behind ';'", "/v1/x?q=1;api_key=" + other, "", []string{"Authorization", "Bearer " + alice}},
			{"X-Api-Key and body", "/v1/x", `{"auth": {"api_key": "` + other + `"}}`, []string{"X-Api-Key", alice}},
			{"a valid key and garbage", "/v1/x", "", []string{"Authorization", "Bearer " + alice, "X-Api-Key", "garbage"}},
		} {
			method := http.MethodGet
			if c.body != "" {
				method = http.MethodPost
			}
			if r := do(t, method, g.base+c.url, c.body, c.headers...); r.status != 401 {
				t.Errorf("%s: %d %s, want 401", c.name, r.status, r.body)
			}
		}
		// A body that repeats a member, in any letter case, is malformed
		// (the API's strict reading), whichever member it is.
		if r := post(t, g.base+"/v1/x", `{"auth": {"api_key": "`+alice+`", "API_KEY": "`+other+`"}}`); r.status != 400 {
			t.Errorf("body in two letter cases: %d %s, want 400", r.status, r.body)
		}
		if r := do(t, http.MethodGet, g.base+"/v1/x?api_key="+alice, "", "Authorization", "Bearer "+alice, "X-Api-Key", alice); r.status != 200 || r.body != "user=alice uri=/v1/x" {
			t.Errorf("the same key in three places: %d %q", r.status, r.body)
		}
	})
}
