package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

var (
	hydraOnce sync.Once
	hydraPath string
	hydraErr  error
)

// hydraBinary builds Ory Hydra from its own tools module once per run.
func hydraBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs Ory Hydra")
	}
	hydraOnce.Do(func() {
		dir, err := os.MkdirTemp("", "apikeys-hydra-")
		if err != nil {
			hydraErr = err
			return
		}
		hydraPath = filepath.Join(dir, "hydra")
		cmd := exec.Command("go", "build", "-tags", "sqlite,sqlite_omit_load_extension", "-o", hydraPath, "github.com/ory/hydra/v2")
		cmd.Dir = filepath.Join(repoRoot(t), "integration", "tools", "hydra")
		if out, err := cmd.CombinedOutput(); err != nil {
			hydraErr = fmt.Errorf("building hydra: %v\n%s", err, out)
		}
	})
	if hydraErr != nil {
		t.Fatal(hydraErr)
	}
	return hydraPath
}

// hydra is a running Ory Hydra with in-memory storage and JWT access
// tokens, on loopback.
type hydra struct {
	public, admin string // base URLs
}

func startHydra(t *testing.T) *hydra {
	t.Helper()
	bin := hydraBinary(t)
	dir := t.TempDir()
	// Hydra listens on unix sockets of the test's own and is reached
	// through loopback ports the test holds (see testutil.Forward).
	sockets := testutil.SocketDir(t, "hydra-")
	pub, adm := filepath.Join(sockets, "public"), filepath.Join(sockets, "admin")
	h := &hydra{public: "http://" + testutil.Forward(t, pub), admin: "http://" + testutil.Forward(t, adm)}
	cfg := fmt.Sprintf(`dsn: memory
serve:
  public:
    host: unix:%s
  admin:
    host: unix:%s
urls:
  self:
    issuer: %s
strategies:
  access_token: jwt
secrets:
  system:
    - a-very-long-system-secret-for-tests-0123456789
log:
  level: warn
`, pub, adm, h.public)
	path := filepath.Join(dir, "hydra.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out", "-c", path)
	p := testutil.StartProcess(t, "hydra", cmd)
	p.Ready(t, 60*time.Second, "hydra ready", func() bool {
		r, err := http.Get(h.admin + "/health/ready")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	return h
}

// client registers a client-credentials client.
func (h *hydra) client(t *testing.T, id, secret string, scopes ...string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"client_id": id, "client_secret": secret, "grant_types": []string{"client_credentials"},
		"token_endpoint_auth_method": "client_secret_post", "scope": strings.Join(scopes, " "), "audience": []string{"apikeys"},
	})
	if r := post(t, h.admin+"/admin/clients", string(body)); r.status != 201 {
		t.Fatalf("creating client: %d %s", r.status, r.body)
	}
}

// token runs the client-credentials grant.
func (h *hydra) token(t *testing.T, id, secret, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}, "scope": {scope}, "audience": {"apikeys"}}
	res, err := http.PostForm(h.public+"/oauth2/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || res.StatusCode != 200 || tok.AccessToken == "" {
		t.Fatalf("token: %d %v", res.StatusCode, err)
	}
	return tok.AccessToken
}

// rotate adds a new signing key for access tokens and removes the others.
func (h *hydra) rotate(t *testing.T, kid string) {
	t.Helper()
	r := do(t, http.MethodGet, h.admin+"/admin/keys/hydra.jwt.access-token", "")
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(r.body), &set); err != nil {
		t.Fatal(err)
	}
	if r := post(t, h.admin+"/admin/keys/hydra.jwt.access-token", `{"alg": "RS256", "kid": "`+kid+`", "use": "sig"}`); r.status != 201 {
		t.Fatalf("adding key: %d %s", r.status, r.body)
	}
	for _, k := range set.Keys {
		if r := do(t, http.MethodDelete, h.admin+"/admin/keys/hydra.jwt.access-token/"+k.KID, ""); r.status != 204 {
			t.Fatalf("deleting key %s: %d %s", k.KID, r.status, r.body)
		}
	}
}

// TestHydraTokens mints, lists and deletes keys with access tokens that a
// real OAuth2 server issued, and follows its signing-key rotation without
// a restart: the very first token signed with the new key is accepted.
func TestHydraTokens(t *testing.T) {
	h := startHydra(t)
	h.client(t, "svc-1", "svc-1-secret-0123456789", "apikeys:write", "other")
	// Hydra makes its signing key with the first token; the gateway then
	// finds it in its first fetch of the JWK Set.
	tok := h.token(t, "svc-1", "svc-1-secret-0123456789", "apikeys:write")
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		jwt {
			issuer %s
			discover
			audience apikeys
			required_scopes apikeys:write
			jwks_refresh 1h
		}
	}
}

%s
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "user={http.auth.user.id} source={http.auth.user.source}"
}
`, caddytestGlobals, filepath.Join(t.TempDir(), "keys.db"), h.public, gatewaySite())
	initGateway(t, cfg)

	create := func(token string) response {
		return post(t, createPath, `{"auth": "`+token+`", "title": "from hydra"}`)
	}
	// The JWK Set is discovered and fetched in the background.
	testutil.Eventually(t, 15*time.Second, "first JWKS fetch", func() bool { return create(tok).status == 200 })

	k := decodeCreated(t, create(tok))
	if got := do(t, http.MethodGet, gateway+"/v1/", "", "Authorization", "Bearer "+k.APIKey); got.body != "user=svc-1 source=jwt:"+h.public {
		t.Fatalf("key minted with a Hydra token acts for %q, want svc-1", got.body)
	}
	listed := fetchKeys(t, `"`+tok+`"`)
	if len(listed) != 2 {
		t.Fatalf("svc-1 has %d keys, want 2", len(listed))
	}
	if r := post(t, deletePath, `{"auth": "`+tok+`", "api_key_id": "`+k.ID+`"}`); r.status != 200 {
		t.Fatalf("delete with a Hydra token: %d %s", r.status, r.body)
	}

	// A token without the required scope is refused.
	other := h.token(t, "svc-1", "svc-1-secret-0123456789", "other")
	if r := create(other); r.status != 401 || !strings.Contains(r.body, `lacks the scope \"apikeys:write\"`) {
		t.Fatalf("token without apikeys:write: %d %s", r.status, r.body)
	}

	// Rotation: the first token signed with the new key is accepted
	// (jwks_refresh is an hour: it waits for the fetch its unknown key id
	// causes), without restarting Caddy; tokens signed by the removed key
	// are refused from then on.
	h.rotate(t, "rotated-1")
	fresh := h.token(t, "svc-1", "svc-1-secret-0123456789", "apikeys:write")
	if r := create(fresh); r.status != 200 {
		t.Fatalf("first token after the rotation: %d %s", r.status, r.body)
	}
	if r := create(tok); r.status != 401 || !strings.Contains(r.body, "invalid OAuth2 token") {
		t.Fatalf("old token: %d %s", r.status, r.body)
	}
}
