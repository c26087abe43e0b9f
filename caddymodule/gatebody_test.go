package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// TestGateReadsEveryBodyItPasses sends, with a valid key in X-Api-Key,
// bodies that carry a second key in every shape the gate might not read:
// padded past its bound, as text/plain, after a byte-order mark, chunked,
// repeated in another letter case. None reaches the upstream with a key
// the gate did not check; bodies without a key, or without a body at
// all, pass unchanged.
func TestGateReadsEveryBodyItPasses(t *testing.T) {
	g, app, key := testGate(t, &APIKeyGate{Headers: []string{"X-Api-Key"}, Body: true})
	other, err := app.keyring.Mint(t.Context(), keystore.Actor{Owner: keystore.Service("mallory"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	second := `{"auth": {"api_key": "` + other.Secret + `"}}`
	padded := `{"pad": "` + strings.Repeat("x", DefaultMaxBodyBytes) + `", "auth": {"api_key": "` + other.Secret + `"}}`
	mine := `{"auth": {"api_key": "` + key + `"}, "q": 1}`
	const noContentType = "-"
	for _, c := range []struct {
		name, method, body, contentType string
		chunked                         bool
		status                          int
	}{
		{"a second key", "POST", second, "application/json", false, 401},
		{"a second key, chunked", "POST", second, "application/json", true, 401},
		{"a second key padded past the bound", "POST", padded, "application/json", false, 413},
		{"a second key padded past the bound, chunked", "POST", padded, "application/json", true, 413},
		{"a second key as text/plain", "POST", second, "text/plain", false, 415},
		{"a second key as text/plain, chunked", "POST", second, "text/plain", true, 415},
		{"a second key after a byte-order mark", "POST", "\xef\xbb\xbf" + second, "application/json", false, 400},
		{"a second key after a byte-order mark, chunked", "POST", "\xef\xbb\xbf" + second, "application/json", true, 400},
		{"a second key in another letter case", "POST", `{"AUTH": {"API_KEY": "` + other.Secret + `"}}`, "application/json", false, 401},
		{"api_key repeated in another letter case", "POST", `{"auth": {"api_key": "` + key + `", "API_KEY": "` + other.Secret + `"}}`, "application/json", false, 400},
		{"a member repeated elsewhere", "POST", `{"q": 1, "Q": 2}`, "application/json", false, 400},
		{"JSON that is not an object", "POST", `[` + second + `]`, "application/json", false, 400},
		{"api_key not a string", "POST", `{"auth": {"api_key": ["` + other.Secret + `"]}}`, "application/json", false, 400},
		{"not JSON", "POST", `auth[api_key]=` + other.Secret, "application/json", false, 400},
		{"invalid UTF-8", "POST", "{\"q\": \"\xff\"}", "application/json", false, 400},
		{"no Content-Type, a second key", "POST", second, noContentType, false, 401},
		{"the same key", "POST", mine, "application/json", false, 200},
		{"the same key, chunked", "POST", mine, "application/json; charset=utf-8", true, 200},
		{"a JSON body without a key", "POST", `{"q": [1, 2], "auth": "a token"}`, "application/vnd.api+json", false, 200},
		{"no body", "GET", "", noContentType, false, 200},
		{"an empty body", "POST", "", "text/plain", false, 200},
		{"an empty body, chunked", "POST", "", "text/plain", true, 200},
		{"white space", "POST", " \r\n", "text/plain", false, 200},
		{"at the bound", "POST", `{"pad": "` + strings.Repeat("x", DefaultMaxBodyBytes-11) + `"}`, "application/json", false, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(c.body)
			if c.chunked {
				body = io.MultiReader(body) // no length: sent chunked
			}
			r := httptest.NewRequest(c.method, "/v1/", body)
			if c.chunked {
				r.ContentLength = -1
			}
			if c.contentType != noContentType {
				r.Header.Set("Content-Type", c.contentType)
			}
			r.Header.Set("X-Api-Key", key)
			a := serveGate(g, r)
			if a.status != c.status {
				t.Fatalf("%d (%v), want %d", a.status, a.err, c.status)
			}
			if !a.admitted() {
				return
			}
			if got, _ := io.ReadAll(a.upstream.Body); string(got) != c.body {
				t.Fatalf("the upstream got a body of %d bytes, not the %d sent", len(got), len(c.body))
			}
		})
	}
	if a := serveGate(g, httptest.NewRequest(http.MethodGet, "/v1/", nil)); a.status != 401 {
		t.Fatalf("no key at all: %d", a.status)
	}
}
