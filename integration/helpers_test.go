package integration

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

var client = &http.Client{Timeout: 10 * time.Second}

// response is what a test needs of an HTTP answer.
type response struct {
	status int
	header http.Header
	body   string
}

func do(t testing.TB, method, url string, body string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return roundTrip(t, req)
}

// roundTrip sends req with the tests' client and reads the whole answer.
func roundTrip(t testing.TB, req *http.Request) response {
	t.Helper()
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

func post(t testing.TB, url, body string, headers ...string) response {
	t.Helper()
	return do(t, http.MethodPost, url, body, headers...)
}

// createdKey is the create_api_key result.
type createdKey struct {
	APIKey     string   `json:"api_key"`
	ID         string   `json:"id"`
	Title      string   `json:"title"`
	Created    float64  `json:"created"`
	LastUsed   *float64 `json:"last_used"`
	KeyPreview string   `json:"key_preview"`
}

func decodeCreated(t testing.TB, r response) createdKey {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("create: status %d, body %s", r.status, r.body)
	}
	var env struct {
		Success bool       `json:"success"`
		Result  createdKey `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.body), &env); err != nil || !env.Success {
		t.Fatalf("create: %v, body %s", err, r.body)
	}
	return env.Result
}

func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestMain(m *testing.M) {
	// Keep the in-process Caddy's data (and any default store) out of
	// the home directory.
	dir, err := os.MkdirTemp("", "apikeys-integration-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_DATA_HOME", dir)
	os.Setenv("XDG_CONFIG_HOME", dir)
	// Configs refer to the JWT secret by placeholder, as users should.
	os.Setenv("APIKEYS_TEST_JWT_SECRET", jwtSecret)
	code := m.Run()
	os.RemoveAll(dir)
	for _, built := range []string{buildDir, filepath.Dir(hydraPath)} {
		if built != "" && built != "." {
			os.RemoveAll(built)
		}
	}
	os.Exit(code)
}
