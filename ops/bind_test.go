package ops

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// The admin API finds each operation by its method and path, a literal
// segment winning over a parameter, and Remote builds the same paths.
func TestRoutesMatchTheirPaths(t *testing.T) {
	for _, c := range []struct {
		method, path string
		want         route
		params       map[string]string
	}{
		{http.MethodGet, "keys", ListKeys, map[string]string{}},
		{http.MethodPost, "keys/lookup", LookupKeys, map[string]string{}},
		{http.MethodPost, "keys/leaked", ReportLeaked, map[string]string{}},
		{http.MethodDelete, "keys/lookup", RevokeKey, map[string]string{"id": "lookup"}},
		{http.MethodPost, "keys/abc/disable", DisableKey, map[string]string{"id": "abc"}},
		{http.MethodPut, "users/team%2Fci/scopes", SetUserScopes, map[string]string{"name": "team/ci"}},
		{http.MethodGet, "keys/abc/nothing", nil, nil},
		{http.MethodPatch, "keys", nil, nil},
		{http.MethodDelete, "keys//x", nil, nil},
	} {
		r := httptest.NewRequest(c.method, Prefix+c.path, nil)
		segments, err := pathSegments(r)
		if err != nil {
			t.Fatal(err)
		}
		got, params := match(r.Method, segments)
		if got != c.want || (c.want != nil && !equal(params, c.params)) {
			t.Errorf("%s %s: %v %v, want %v %v", c.method, c.path, got, params, c.want, c.params)
		}
	}
	// A name with a slash and dots stays one segment on the way there.
	in := UserName{Name: "../team/ci"}
	path := encodePath(RemoveUser, &in)
	r := httptest.NewRequest(http.MethodDelete, Prefix+path, nil)
	segments, _ := pathSegments(r)
	if _, params := match(http.MethodDelete, segments); params["name"] != in.Name {
		t.Fatalf("%s: %v", path, params)
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Query strings name members as their json tags do, each once; any other
// parameter is refused rather than ignored.
func TestQueryBinding(t *testing.T) {
	var ref OwnerRef
	if err := bindQuery(&ref, url.Values{"user": {"alice"}, "source": {"jwt:x"}}); err != nil || ref != (OwnerRef{User: "alice", Source: "jwt:x"}) {
		t.Fatalf("%+v, %v", ref, err)
	}
	for _, q := range []url.Values{{"usr": {"alice"}}, {"user": {"a", "b"}}} {
		if err := bindQuery(&OwnerRef{}, q); err == nil {
			t.Errorf("%v accepted", q)
		}
	}
	if got := encodeQuery(&OwnerRef{Service: "ci"}); got != "?service=ci" {
		t.Fatalf("encodeQuery: %q", got)
	}
}
