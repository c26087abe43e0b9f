package integration

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestJWTAttackBattery sends forged and broken tokens to create_api_key:
// each gets 401 with a JSON error, and nothing reaches the store.
func TestJWTAttackBattery(t *testing.T) {
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pemPath := filepath.Join(dir, "idp.pem")
	if err := os.WriteFile(pemPath, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	initGateway(t, fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		jwt {
			public_key_file %s
			issuer https://idp.test
			audience apikeys
		}
	}
}

%s
	apikeys_api /api/*
}
`, caddytestGlobals, filepath.Join(dir, "keys.db"), pemPath, gatewaySite()))

	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "iss": "https://idp.test", "aud": "apikeys", "exp": time.Now().Add(time.Hour).Unix()}
		if change != nil {
			change(c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, k any, c jwt.MapClaims, header map[string]any) string {
		tok := jwt.NewWithClaims(m, c)
		for h, v := range header {
			tok.Header[h] = v
		}
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(jwt.SigningMethodRS256, key, claims(nil), nil)
	parts := strings.Split(good, ".")
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	forgedPayload, _ := json.Marshal(claims(func(c jwt.MapClaims) { c["sub"] = "admin" }))

	attacks := map[string]string{
		"alg none":                  sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil), nil),
		"HS256 with the public key": sign(jwt.SigningMethodHS256, pubPEM, claims(nil), nil),
		"expired":                   sign(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), nil),
		"not yet valid":             sign(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() }), nil),
		"wrong issuer":              sign(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }), nil),
		"wrong audience":            sign(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["aud"] = "billing" }), nil),
		"missing exp":               sign(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { delete(c, "exp") }), nil),
		"tampered payload":          parts[0] + "." + base64.RawURLEncoding.EncodeToString(forgedPayload) + "." + parts[2],
		"tampered signature":        parts[0] + "." + parts[1] + "." + otherFirstChar(parts[2]),
		"another key":               sign(jwt.SigningMethodRS256, otherKey, claims(nil), nil),
		"unknown kid":               sign(jwt.SigningMethodRS256, otherKey, claims(nil), map[string]any{"kid": "no-such-key"}),
		"kid path injection":        sign(jwt.SigningMethodRS256, otherKey, claims(nil), map[string]any{"kid": "../../../../etc/passwd"}),
		"kid URL injection":         sign(jwt.SigningMethodRS256, otherKey, claims(nil), map[string]any{"kid": "https://evil.test/jwks.json", "jku": "https://evil.test/jwks.json"}),
		"garbage segments":          "eyJhbGciOi.!!!.???",
		"two segments":              parts[0] + "." + parts[1],
	}
	for name, tok := range attacks {
		r := post(t, createPath, `{"auth": "`+tok+`"}`)
		var body struct {
			Success bool   `json:"success"`
			Error   string `json:"error"`
		}
		if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.status != 401 || body.Success || !strings.HasPrefix(body.Error, "invalid OAuth2 token: ") {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := post(t, createPath, `{"auth": "`+strings.Repeat("a", 17<<10)+`"}`); r.status != 401 || !strings.Contains(r.body, "invalid OAuth2 token: token is too long") {
		t.Errorf("oversized token: %d %s", r.status, r.body)
	}
	// The genuine token works, and no attack left a key behind.
	decodeCreated(t, post(t, createPath, `{"auth": "`+good+`"}`))
	if keys := fetchKeys(t, `"`+good+`"`); len(keys) != 1 {
		t.Fatalf("alice has %d keys after the attacks, want only the genuine one", len(keys))
	}
}

// otherFirstChar changes the first character of a base64url string, which
// always changes the decoded bytes.
func otherFirstChar(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}
