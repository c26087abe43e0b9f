package caddymodule

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// provisionApp provisions an App from JSON in its own Caddy context,
// cleaned up when the test ends.
func provisionApp(t testing.TB, config string) (*App, error) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	var app App
	if err := json.Unmarshal([]byte(config), &app); err != nil {
		t.Fatal(err)
	}
	err := app.Provision(ctx)
	t.Cleanup(func() {
		cancel()
		_ = app.Cleanup()
	})
	return &app, err
}

func storeJSON(path string) string {
	b, _ := json.Marshal(path)
	return `{"backend": "bolt", "path": ` + string(b) + `, "open_timeout": "300ms"}`
}

func TestAppSecretsFromEnvAndFile(t *testing.T) {
	dir := t.TempDir()
	const secret = "a-secret-from-a-file-0123456789abcdef"
	secretFile := filepath.Join(dir, "jwt")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("APIKEYS_TEST_SECRET", "a-secret-from-the-env-0123456789abcdef")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemFile := filepath.Join(dir, "idp.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	app, err := provisionApp(t, `{
		"store": `+storeJSON(filepath.Join(dir, "k.db"))+`,
		"jwt": [{"secrets": ["{file.`+secretFile+`}", "{env.APIKEYS_TEST_SECRET}"], "public_key_files": [`+jsonString(pemFile)+`], "accept_any_audience": true}]
	}`)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	tokens := map[string]string{}
	tokens["file"], _ = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	tokens["env"], _ = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("a-secret-from-the-env-0123456789abcdef"))
	tokens["pem"], _ = jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(priv)
	for from, tok := range tokens {
		t.Run(from, func(t *testing.T) {
			user, err := app.verifier.Authenticate(context.Background(), identity.Credential{Kind: identity.KindOAuth2, Token: tok}, "")
			if err != nil || user.Owner.Name != "alice" {
				t.Errorf("token signed with the %s key: %+v, %v", from, user, err)
			}
		})
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestAppConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"unset env secret":   `{"jwt": [{"secrets": ["{env.APIKEYS_SURELY_UNSET}"]}]}`,
		"short secret":       `{"jwt": [{"secrets": ["short"]}]}`,
		"missing key file":   `{"jwt": [{"public_key_files": ["/nonexistent/idp.pem"]}]}`,
		"plaintext hash":     `{"users": [{"username": "a", "password": "hunter2"}]}`,
		"duplicate user":     `{"users": [{"username": "a", "password": "$2a$14$X3ulqf/iGxnf1k6oMZ.RZeJUoqI9PX2PM4rS5lkIKJXduLGXGPrt6"}, {"username": "a", "password": "$2a$14$X3ulqf/iGxnf1k6oMZ.RZeJUoqI9PX2PM4rS5lkIKJXduLGXGPrt6"}]}`,
		"empty username":     `{"users": [{"username": "", "password": "$2a$14$X3ulqf/iGxnf1k6oMZ.RZeJUoqI9PX2PM4rS5lkIKJXduLGXGPrt6"}]}`,
		"unknown algorithm":  `{"jwt": [{"secrets": ["0123456789abcdef0123456789abcdef"], "algorithms": ["RS256"]}]}`,
		"two unpinned":       `{"jwt": [{"secrets": ["0123456789abcdef0123456789abcdef"]}, {"secrets": ["abcdef0123456789abcdef0123456789"]}]}`,
		"discover no issuer": `{"jwt": [{"discover": true}]}`,
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			cfg = strings.Replace(cfg, "{", `{"store": `+storeJSON(filepath.Join(dir, name+".db"))+", ", 1)
			if _, err := provisionApp(t, cfg); err == nil {
				t.Errorf("%s: provisioned without error", name)
			}
		})
	}
}

func TestAppLockedByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	// A handle opened outside the pool stands for another process.
	other, err := boltstore.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	start := time.Now()
	_, err = provisionApp(t, `{"store": `+storeJSON(path)+`}`)
	if !errors.Is(err, boltstore.ErrLocked) || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("Provision: %v, want a locked-file error", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("waited %v for a 300ms open_timeout", waited)
	}
}

func TestAppsShareOneHandlePerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	// Two configs on the same file, as during a reload: the second must
	// not block on the first one's lock.
	a1, err := provisionApp(t, `{"store": `+storeJSON(path)+`}`)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := provisionApp(t, `{"store": `+storeJSON(path)+`}`)
	if err != nil {
		t.Fatal(err)
	}
	m, err := a1.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Cleaning up the old config leaves the new one working.
	if err := a1.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := a1.Cleanup(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := a2.keyring.VerifyWithin(context.Background(), m.Secret, nil, ""); err != nil {
		t.Fatalf("key minted by the old config, checked by the new: %v", err)
	}
}

func TestAppCleanupAfterFailedProvision(t *testing.T) {
	var app App
	if err := app.Cleanup(); err != nil {
		t.Fatalf("Cleanup of an unprovisioned app: %v", err)
	}
}
