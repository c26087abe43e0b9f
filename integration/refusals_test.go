package integration

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// shippedErrorRoutes is the handle_errors block of Caddyfile.example,
// which gives apikey_auth's refusals the API's JSON shape.
func shippedErrorRoutes(t testing.TB) string {
	t.Helper()
	cfg := string(mustReadTB(t, filepath.Join(repoRoot(t), "Caddyfile.example")))
	_, block, ok := strings.Cut(cfg, "\n\thandle_errors ")
	if !ok {
		t.Fatal("Caddyfile.example has no handle_errors")
	}
	block, _, _ = strings.Cut(block, "\n\t}\n")
	return "\thandle_errors " + block + "\n\t}\n"
}

// basicAuth is an Authorization value with Basic credentials.
func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// TestShippedCaddyfilesShapeRefusalsAlike: Caddyfile.cluster (and so
// docs/cluster.md, which shows it verbatim) answers refusals with the same
// handle_errors as Caddyfile.example, which TestRefusalsInTheAPIShape runs.
func TestShippedCaddyfilesShapeRefusalsAlike(t *testing.T) {
	cluster := string(mustRead(t, filepath.Join(repoRoot(t), "Caddyfile.cluster")))
	if routes := shippedErrorRoutes(t); !strings.Contains(cluster, routes) {
		t.Fatalf("Caddyfile.cluster does not have Caddyfile.example's error routes:\n%s", routes)
	}
}

// apiRefusal is an answer in the API's error shape.
type apiRefusal struct {
	Success *bool   `json:"success"`
	Error   *string `json:"error"`
}

// wantRefusal fails unless r has status and is the API's JSON error
// saying msg, with the given header fields (field -> prefix of its value).
func wantRefusal(t *testing.T, what string, r response, status int, msg string, fields map[string]string) {
	t.Helper()
	var body apiRefusal
	if r.status != status || r.header.Get("Content-Type") != "application/json" ||
		json.Unmarshal([]byte(r.body), &body) != nil || body.Success == nil || *body.Success || body.Error == nil || *body.Error != msg {
		t.Errorf("%s: %d %q %s; want %d and the API's JSON saying %q", what, r.status, r.header.Get("Content-Type"), r.body, status, msg)
	}
	for field, prefix := range fields {
		if v := r.header.Get(field); v == "" || !strings.HasPrefix(v, prefix) {
			t.Errorf("%s: %s is %q, want %q…", what, field, v, prefix)
		}
	}
}

// TestRefusalsInTheAPIShape runs a copy of Caddyfile.example with a
// plan (3 requests an hour, credits) and a route that needs a scope,
// and has apikey_auth refuse in each way it can: without a key, with a
// bad one, with two, without the scope, over the rate, out of credits.
// Every refusal is the API's JSON, with its status, message and header
// fields, from the shipped handle_errors.
func TestRefusalsInTheAPIShape(t *testing.T) {
	config, base, ports := exampleCopy(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "\tapikeys {\n", "\tapikeys {\n\t\tdefault_plan demo\n\t\tplan demo {\n\t\t\trate 3/1h burst\n\t\t\tcredits 1000\n\t\t}\n", 1)
		return strings.Replace(cfg, "\tapikey_auth /v1/* {\n", "\tapikey_auth /scoped/* {\n\t\trequire_scopes write\n\t}\n\tapikey_auth /v1/* {\n", 1)
	})
	startBinary(t, config, t.TempDir(), ports)
	admin := ports[2].Addr
	mint := func() createdKey {
		return decodeCreated(t, do(t, http.MethodPost, base+"/api/create_api_key", "", "Authorization", basicAuth("example_username", "example_password")))
	}
	rated, spent := mint(), mint()
	get := func(path string, headers ...string) response { return do(t, http.MethodGet, base+path, "", headers...) }

	wantRefusal(t, "no key", get("/v1/x"), 401, "a valid API key is required",
		map[string]string{"WWW-Authenticate": `Bearer realm="apikeys"`})
	wantRefusal(t, "a bad key", get("/v1/x", "Authorization", "Bearer sk-nothing"), 401, "a valid API key is required",
		map[string]string{"WWW-Authenticate": `Bearer realm="apikeys", error="invalid_token"`})
	wantRefusal(t, "two keys", get("/v1/x", "Authorization", "Bearer "+rated.APIKey, "X-Api-Key", spent.APIKey), 401,
		"the request carries more than one API key", map[string]string{"WWW-Authenticate": `Bearer realm="apikeys", error="invalid_request"`})
	wantRefusal(t, "a missing scope", get("/scoped/x", "Authorization", "Bearer "+rated.APIKey), 403, "the API key lacks the scope 'write'",
		map[string]string{"WWW-Authenticate": `Bearer realm="apikeys", error="insufficient_scope", scope="write"`})

	for i := range 3 { // refusals for the key or its scope count for nothing
		if r := get("/v1/x", "Authorization", "Bearer "+rated.APIKey); r.status != 200 {
			t.Fatalf("request %d of 3 an hour: %d %s", i+1, r.status, r.body)
		}
	}
	wantRefusal(t, "over the rate", get("/v1/x", "Authorization", "Bearer "+rated.APIKey), 429,
		"rate limit 'burst' exceeded: at most 3 requests per 1h",
		map[string]string{"Retry-After": "", "RateLimit-Policy": `"burst";q=3;w=3600`, "RateLimit": `"burst";r=0;t=`})

	mustCLI(t, "", "--address", admin, "key", "credits", spent.ID, "--set", "0")
	wantRefusal(t, "out of credits", get("/v1/x", "Authorization", "Bearer "+spent.APIKey), 429, "the key's credits are spent",
		map[string]string{"RateLimit-Policy": `"credits";q=1000;qu="credits"`, "RateLimit": `"credits";r=0`})
}

// TestBodiesAreReadInFullOrRefused runs a copy of Caddyfile.example whose
// apikey_auth also reads keys from bodies (body), and sends a valid key
// in X-Api-Key with a second key in the body, in every shape a gateway
// might pass on unread: padded past the 64 KiB it reads, as text/plain,
// after a UTF-8 byte-order mark, each also chunked. Each is refused in
// the API's JSON shape; bodies it can read pass.
func TestBodiesAreReadInFullOrRefused(t *testing.T) {
	config, base, ports := exampleCopy(t, func(cfg string) string {
		return strings.Replace(cfg, "\tapikey_auth /v1/* {\n\t\theader X-Api-Key\n", "\tapikey_auth /v1/* {\n\t\theader X-Api-Key\n\t\tbody\n", 1)
	})
	startBinary(t, config, t.TempDir(), ports)
	mint := func() string {
		return decodeCreated(t, do(t, http.MethodPost, base+"/api/create_api_key", "", "Authorization", basicAuth("example_username", "example_password"))).APIKey
	}
	a, b := mint(), mint()
	second := `{"auth": {"api_key": "` + b + `"}}`
	padded := `{"pad": "` + strings.Repeat("x", 64<<10) + `", "auth": {"api_key": "` + b + `"}}`
	send := func(method, body, contentType string, chunked bool) response {
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // of unknown length: sent chunked
		}
		req, err := http.NewRequest(method, base+"/v1/x", rd)
		if err != nil {
			t.Fatal(err)
		}
		if body == "" && !chunked {
			req.Body = nil
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		req.Header.Set("X-Api-Key", a)
		return roundTrip(t, req)
	}
	for _, chunked := range []bool{false, true} {
		how := map[bool]string{false: "", true: ", chunked"}[chunked]
		wantRefusal(t, "a second key"+how, send("POST", second, "application/json", chunked), 401, "the request carries more than one API key", nil)
		wantRefusal(t, "a second key past 64 KiB"+how, send("POST", padded, "application/json", chunked), 413,
			"the request body is larger than the limit of 65536 bytes", nil)
		wantRefusal(t, "a second key as text/plain"+how, send("POST", second, "text/plain", chunked), 415,
			"the request body must be JSON (Content-Type application/json)", nil)
		wantRefusal(t, "a second key after a byte-order mark"+how, send("POST", "\xef\xbb\xbf"+second, "application/json", chunked), 400,
			"the request body must be a JSON object", nil)
		if r := send("POST", `{"auth": {"api_key": "`+a+`"}}`, "application/json", chunked); r.status != 200 {
			t.Errorf("the same key in the body%s: %d %s", how, r.status, r.body)
		}
		if r := send("POST", "", "text/plain", chunked); r.status != 200 {
			t.Errorf("an empty body%s: %d %s", how, r.status, r.body)
		}
	}
	if r := send("GET", "", "", false); r.status != 200 {
		t.Errorf("no body: %d %s", r.status, r.body)
	}
}
