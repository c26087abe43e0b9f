package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestBadInputBattery sends malformed and hostile requests to the key
// endpoints. Each gets its documented status and a JSON error that says
// what to fix; none gets a 5xx, and none writes anything to the store.
func TestBadInputBattery(t *testing.T) {
	startGateway(t)
	const pw = `{"username": "alice", "password": "alicepw"}`
	long := strings.Repeat("x", 70<<10)
	cases := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		headers     []string
		status      int
		errorPart   string // in the JSON "error"; "" for bodiless answers
	}{
		// Not JSON, or not an object.
		{"form body", "POST", createPath, "application/x-www-form-urlencoded", "auth=alice", nil, 415, "Content-Type must be application/json"},
		{"text/plain", "POST", createPath, "text/plain", `{"auth": ` + pw + `}`, nil, 415, "Content-Type must be application/json"},
		{"multipart", "POST", createPath, "multipart/form-data; boundary=x", "--x--", nil, 415, "Content-Type must be application/json"},
		{"xml", "POST", createPath, "application/xml", "<auth/>", nil, 415, "Content-Type"},
		{"plain words", "POST", createPath, "application/json", "hello", nil, 400, "must be a JSON object"},
		{"truncated object", "POST", createPath, "application/json", `{"auth": {"username": "alice"`, nil, 400, "not valid JSON"},
		{"truncated string", "POST", createPath, "application/json", `{"auth": "abc`, nil, 400, "not valid JSON"},
		{"trailing garbage", "POST", createPath, "application/json", `{"auth": ` + pw + `} x`, nil, 400, "not valid JSON"},
		{"two objects", "POST", createPath, "application/json", `{} {}`, nil, 400, "not valid JSON"},
		{"array body", "POST", createPath, "application/json", `[` + pw + `]`, nil, 400, "must be a JSON object"},
		{"number body", "POST", createPath, "application/json", `42`, nil, 400, "must be a JSON object"},
		{"string body", "POST", createPath, "application/json", `"auth"`, nil, 400, "must be a JSON object"},
		{"null body", "POST", createPath, "application/json", `null`, nil, 400, "must be a JSON object"},
		{"true body", "POST", createPath, "application/json", `true`, nil, 400, "must be a JSON object"},
		{"single quotes", "POST", createPath, "application/json", `{'auth': 'x'}`, nil, 400, "not valid JSON"},
		{"trailing comma", "POST", createPath, "application/json", `{"auth": "x",}`, nil, 400, "not valid JSON"},
		{"comment", "POST", createPath, "application/json", `{"auth": "x" /* c */}`, nil, 400, "not valid JSON"},
		{"NaN", "POST", createPath, "application/json", `{"auth": NaN}`, nil, 400, "not valid JSON"},
		{"invalid UTF-8", "POST", createPath, "application/json", "{\"auth\": {\"username\": \"al\xffice\", \"password\": \"p\"}}", nil, 400, "not valid UTF-8"},
		{"UTF-16 BOM", "POST", createPath, "application/json", "\xfe\xff{}", nil, 400, "must be a JSON object"},
		{"deep nesting", "POST", createPath, "application/json", `{"auth": ` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, nil, 400, "not valid JSON"},
		{"duplicate auth", "POST", createPath, "application/json", `{"auth": "x", "auth": ` + pw + `}`, nil, 400, `member "auth" more than once`},
		{"duplicate nested", "POST", createPath, "application/json", `{"auth": {"username": "mallory", "username": "alice", "password": "alicepw"}}`, nil, 400, `member "username" more than once`},
		{"duplicate title", "POST", createPath, "application/json", `{"auth": ` + pw + `, "title": "a", "title": "b"}`, nil, 400, `member "title" more than once`},
		{"too large", "POST", createPath, "application/json", `{"title": "` + long + `"}`, nil, 413, "larger than the limit"},

		// The auth member.
		{"empty object", "POST", createPath, "application/json", `{}`, nil, 401, `missing "auth"`},
		{"empty body", "POST", createPath, "", ``, nil, 401, `missing "auth"`},
		{"whitespace body", "POST", createPath, "application/json", "  \n ", nil, 401, `missing "auth"`},
		{"auth null", "POST", createPath, "application/json", `{"auth": null}`, nil, 401, `missing "auth"`},
		{"auth number", "POST", createPath, "application/json", `{"auth": 5}`, nil, 400, "must be an OAuth2 token string or an object"},
		{"auth true", "POST", createPath, "application/json", `{"auth": true}`, nil, 400, "must be an OAuth2 token string or an object"},
		{"auth list", "POST", createPath, "application/json", `{"auth": ["alice", "alicepw"]}`, nil, 400, "must be an OAuth2 token string or an object"},
		{"auth empty object", "POST", createPath, "application/json", `{"auth": {}}`, nil, 400, "must be an OAuth2 token string or an object"},
		{"auth nested nonsense", "POST", createPath, "application/json", `{"auth": {"auth": {"auth": {}}}}`, nil, 400, "must be an OAuth2 token string or an object"},
		{"auth empty string", "POST", createPath, "application/json", `{"auth": ""}`, nil, 400, "token is empty"},
		{"username only", "POST", createPath, "application/json", `{"auth": {"username": "alice"}}`, nil, 400, `"auth.password" is missing`},
		{"password only", "POST", createPath, "application/json", `{"auth": {"password": "alicepw"}}`, nil, 400, `"auth.username" is missing`},
		{"empty username", "POST", createPath, "application/json", `{"auth": {"username": "", "password": "alicepw"}}`, nil, 400, "must not be empty"},
		{"empty password", "POST", createPath, "application/json", `{"auth": {"username": "alice", "password": ""}}`, nil, 400, "must not be empty"},
		{"username number", "POST", createPath, "application/json", `{"auth": {"username": 7, "password": "alicepw"}}`, nil, 400, `"auth.username" must be a string`},
		{"password object", "POST", createPath, "application/json", `{"auth": {"username": "alice", "password": {"x": 1}}}`, nil, 400, `"auth.password" must be a string`},
		{"username control char", "POST", createPath, "application/json", `{"auth": {"username": "ali\u0000ce", "password": "alicepw"}}`, nil, 400, "control characters"},
		{"username newline", "POST", createPath, "application/json", `{"auth": {"username": "alice\nadmin", "password": "alicepw"}}`, nil, 400, "control characters"},
		{"password NUL", "POST", createPath, "application/json", `{"auth": {"username": "alice", "password": "alice\u0000pw"}}`, nil, 400, "NUL"},
		{"password_prehash", "POST", createPath, "application/json", `{"auth": {"username": "alice", "password_prehash": "abc"}}`, nil, 400, "not supported"},
		{"oauth2 number", "POST", createPath, "application/json", `{"auth": {"oauth2": 1}}`, nil, 400, `"auth.oauth2" must be a string`},
		{"oversized token", "POST", createPath, "application/json", `{"auth": "` + strings.Repeat("a", 17<<10) + `"}`, nil, 401, "token is too long"},
		{"garbage token", "POST", createPath, "application/json", `{"auth": "not-a-jwt"}`, nil, 401, "token is malformed"},
		{"unknown user", "POST", createPath, "application/json", `{"auth": {"username": "nobody", "password": "x"}}`, nil, 401, "invalid username or password"},
		{"api key object", "POST", createPath, "application/json", `{"auth": {"api_key": "sk-x"}}`, nil, 403, "API keys cannot be used"},

		// The title.
		{"title number", "POST", createPath, "application/json", `{"auth": ` + pw + `, "title": 1}`, nil, 400, `"title" must be a string`},
		{"title object", "POST", createPath, "application/json", `{"auth": ` + pw + `, "title": {}}`, nil, 400, `"title" must be a string`},
		{"title too long", "POST", createPath, "application/json", `{"auth": ` + pw + `, "title": "` + strings.Repeat("é", 257) + `"}`, nil, 400, "at most 256 characters"},
		{"title control char", "POST", createPath, "application/json", `{"auth": ` + pw + `, "title": "a\u0007b"}`, nil, 400, "control characters"},
		{"title escape", "POST", createPath, "application/json", `{"auth": ` + pw + `, "title": "\u001b[31mred"}`, nil, 400, "control characters"},
		{"expires_in string", "POST", createPath, "application/json", `{"auth": ` + pw + `, "expires_in": "1h"}`, nil, 400, "non-negative number of seconds"},
		{"expires_in negative", "POST", createPath, "application/json", `{"auth": ` + pw + `, "expires_in": -5}`, nil, 400, "non-negative number of seconds"},
		{"scopes not list", "POST", createPath, "application/json", `{"auth": ` + pw + `, "scopes": "read"}`, nil, 400, "list of strings"},
		{"scope with space", "POST", createPath, "application/json", `{"auth": ` + pw + `, "scopes": ["a b"]}`, nil, 400, "printable ASCII"},

		// Other endpoints.
		{"delete without id", "POST", deletePath, "application/json", `{"auth": ` + pw + `}`, nil, 400, `"api_key_id" is required`},
		{"delete id number", "POST", deletePath, "application/json", `{"auth": ` + pw + `, "api_key_id": 12}`, nil, 400, `"api_key_id" must be a string`},
		{"delete unknown id", "POST", deletePath, "application/json", `{"auth": ` + pw + `, "api_key_id": "../../etc/passwd"}`, nil, 404, "API key not found"},
		{"rotate grace string", "POST", rotatePath, "application/json", `{"auth": ` + pw + `, "api_key_id": "x", "grace_seconds": "5"}`, nil, 400, "non-negative number of seconds"},
		{"fetch with api key", "POST", fetchPath, "application/json", `{"auth": {"api_key": "sk-x"}}`, nil, 403, "API keys cannot be used to fetch"},

		// Methods and CORS.
		{"GET", "GET", createPath, "", "", nil, 405, "use POST"},
		{"PUT", "PUT", createPath, "application/json", `{}`, nil, 405, "use POST"},
		{"DELETE", "DELETE", deletePath, "", "", nil, 405, "use POST"},
		{"OPTIONS without CORS", "OPTIONS", createPath, "", "", []string{"Origin", "https://evil.test", "Access-Control-Request-Method", "POST"}, 405, "use POST"},
		{"preflight allowed origin", "OPTIONS", createPath, "", "", []string{"Origin", "https://app.test", "Access-Control-Request-Method", "POST"}, 204, ""},
		{"basic without password", "POST", createPath, "", "", []string{"Authorization", "Basic YWxpY2U6"}, 400, "need a username and a password"},
		{"bearer api key", "POST", createPath, "", "", []string{"Authorization", "Bearer sk-abc"}, 403, "API keys cannot be used"},
	}
	if len(cases) < 60 {
		t.Fatalf("battery has %d cases, want at least 60", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			for i := 0; i+1 < len(c.headers); i += 2 {
				req.Header.Set(c.headers[i], c.headers[i+1])
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body struct {
				Success *bool  `json:"success"`
				Error   string `json:"error"`
			}
			decodeErr := json.NewDecoder(res.Body).Decode(&body)
			if res.StatusCode != c.status {
				t.Fatalf("status %d (error %q), want %d", res.StatusCode, body.Error, c.status)
			}
			if c.name == "preflight allowed origin" && res.Header.Get("Access-Control-Allow-Origin") != "https://app.test" {
				t.Fatalf("Access-Control-Allow-Origin %q", res.Header.Get("Access-Control-Allow-Origin"))
			}
			if c.errorPart == "" {
				return
			}
			if decodeErr != nil || body.Success == nil || *body.Success || !strings.Contains(body.Error, c.errorPart) {
				t.Fatalf("body error %q (%v), want one containing %q", body.Error, decodeErr, c.errorPart)
			}
			if c.status == 405 && res.Header.Get("Allow") != "POST" {
				t.Fatalf("Allow: %q", res.Header.Get("Allow"))
			}
		})
	}
	// Nothing reached the store: alice still has no keys.
	if keys := fetchKeys(t, pw); len(keys) != 0 {
		t.Fatalf("bad requests stored %d keys", len(keys))
	}
}
