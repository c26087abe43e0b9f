package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

type testKeys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

func newTestKeys(t *testing.T) testKeys {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{rk, ek, dk}
}

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "iss": "https://idp.test", "aud": "apikeys"}
}

func TestJWTAcceptsEachKeyFamily(t *testing.T) {
	k := newTestKeys(t)
	var pubs []crypto.PublicKey
	for _, p := range [][]byte{pemOf(t, &k.rsa.PublicKey), pemOf(t, &k.ec.PublicKey), pemOf(t, k.ed.Public())} {
		pk, err := ParsePublicKeyPEM(p)
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, pk)
	}
	v, err := NewJWTVerifier(JWTConfig{AnyAudience: true, HMACSecrets: [][]byte{testSecret}, PublicKeys: pubs})
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{
		"HS256": sign(t, jwt.SigningMethodHS256, testSecret, validClaims()),
		"HS512": sign(t, jwt.SigningMethodHS512, testSecret, validClaims()),
		"RS256": sign(t, jwt.SigningMethodRS256, k.rsa, validClaims()),
		"PS384": sign(t, jwt.SigningMethodPS384, k.rsa, validClaims()),
		"ES256": sign(t, jwt.SigningMethodES256, k.ec, validClaims()),
		"EdDSA": sign(t, jwt.SigningMethodEdDSA, k.ed, validClaims()),
	}
	for alg, tok := range tokens {
		t.Run(alg, func(t *testing.T) {
			if user, err := v.Verify(context.Background(), tok); err != nil || user.Owner.Name != "alice" {
				t.Errorf("%s: Verify = %+v, %v", alg, user, err)
			}
		})
	}
}

func TestJWTRefusesAttacks(t *testing.T) {
	k := newTestKeys(t)
	rsaPEM := pemOf(t, &k.rsa.PublicKey)
	v, err := NewJWTVerifier(JWTConfig{
		PublicKeys: []crypto.PublicKey{&k.rsa.PublicKey},
		Issuer:     "https://idp.test",
		Audiences:  []string{"apikeys"},
	})
	if err != nil {
		t.Fatal(err)
	}
	hsV, err := NewJWTVerifier(JWTConfig{AnyAudience: true, HMACSecrets: [][]byte{testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	with := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := validClaims()
		change(c)
		return c
	}
	good := sign(t, jwt.SigningMethodRS256, k.rsa, validClaims())
	parts := strings.Split(good, ".")
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims())
	cases := map[string]struct {
		v   *JWTVerifier
		tok string
	}{
		"alg none":               {v, noneTok},
		"HS256 with RSA pub key": {v, sign(t, jwt.SigningMethodHS256, rsaPEM, validClaims())},
		"ES256 against RSA key":  {v, sign(t, jwt.SigningMethodES256, k.ec, validClaims())},
		"signed by another key":  {v, sign(t, jwt.SigningMethodRS256, otherRSA, validClaims())},
		"expired":                {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }))},
		"not yet valid":          {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() }))},
		"issued in future":       {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() }))},
		"missing exp":            {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { delete(c, "exp") }))},
		"wrong issuer":           {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }))},
		"wrong audience":         {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["aud"] = "other" }))},
		"no audience":            {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { delete(c, "aud") }))},
		"no identity claim":      {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { delete(c, "sub") }))},
		"identity not a string":  {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["sub"] = 42 }))},
		"identity with NUL":      {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["sub"] = "carol\x00x" }))},
		"identity with a source": {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["sub"] = "service\x1falice" }))},
		"identity too long":      {v, sign(t, jwt.SigningMethodRS256, k.rsa, with(func(c jwt.MapClaims) { c["sub"] = strings.Repeat("a", 129) }))},
		"tampered payload":       {v, parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":9999999999}`)) + "." + parts[2]},
		"tampered signature":     {v, parts[0] + "." + parts[1] + "." + otherFirstChar(parts[2])},
		"signature respelt":      {v, parts[0] + "." + parts[1] + "." + respelt(parts[2])},
		"garbage":                {v, "not.a.jwt"},
		"two segments":           {v, parts[0] + "." + parts[1]},
		"oversized":              {v, strings.Repeat("a", MaxTokenLen+1)},
		"HS token, wrong secret": {hsV, sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-32-bytes-long!"), validClaims())},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			user, err := c.v.Verify(context.Background(), c.tok)
			if err == nil {
				t.Errorf("%s: accepted as %+v", name, user)
				return
			}
			if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, ErrBadCredentials) {
				t.Errorf("%s: error %v does not wrap ErrInvalidToken and ErrBadCredentials", name, err)
			}
		})
	}
}

func TestJWTIdentityClaimAndLeeway(t *testing.T) {
	v, err := NewJWTVerifier(JWTConfig{AnyAudience: true, HMACSecrets: [][]byte{testSecret}, IdentityClaim: "username", Leeway: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	// QueryLake-style token: the username claim, exp just passed but
	// within leeway.
	tok := sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"username": "ql-user", "exp": time.Now().Add(-30 * time.Second).Unix()})
	if user, err := v.Verify(context.Background(), tok); err != nil || user.Owner.Name != "ql-user" {
		t.Fatalf("Verify = %+v, %v", user, err)
	}
}

func TestJWTConfigErrors(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	k := newTestKeys(t)
	cases := map[string]JWTConfig{
		"nothing":             {},
		"short secret":        {HMACSecrets: [][]byte{[]byte("short")}},
		"weak RSA":            {PublicKeys: []crypto.PublicKey{&small.PublicKey}},
		"alg without key":     {HMACSecrets: [][]byte{testSecret}, Algorithms: []string{"RS256"}},
		"none as algorithm":   {HMACSecrets: [][]byte{testSecret}, Algorithms: []string{"none"}},
		"unsupported keytype": {PublicKeys: []crypto.PublicKey{"not a key"}},
		"no audience":         {HMACSecrets: [][]byte{testSecret}},
		"service namespace":   {HMACSecrets: [][]byte{testSecret}, AnyAudience: true, Namespace: "service"},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			if name != "no audience" && name != "service namespace" {
				cfg.AnyAudience = true // so that each case fails for its own reason
			}
			if _, err := NewJWTVerifier(cfg); err == nil {
				t.Errorf("%s: accepted", name)
			}
		})
	}
	if _, err := NewJWTVerifier(JWTConfig{HMACSecrets: [][]byte{testSecret}}); err == nil || !strings.Contains(err.Error(), "accept_any_audience") || !strings.Contains(err.Error(), "RFC 9068") {
		t.Fatalf("a config without audience: %v; the error must say why and how to opt out", err)
	}
	// Narrowing the algorithms refuses the others.
	v, err := NewJWTVerifier(JWTConfig{AnyAudience: true, HMACSecrets: [][]byte{testSecret}, PublicKeys: []crypto.PublicKey{&k.rsa.PublicKey}, Algorithms: []string{"RS256"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, testSecret, validClaims())); err == nil {
		t.Fatal("HS256 accepted though only RS256 is allowed")
	}
	if _, err := ParsePublicKeyPEM([]byte("junk")); err == nil {
		t.Fatal("junk PEM accepted")
	}
}

func FuzzJWTVerify(f *testing.F) {
	claims := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
	f.Add(tok)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("")
	v, err := NewJWTVerifier(JWTConfig{AnyAudience: true, HMACSecrets: [][]byte{testSecret}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		user, err := v.Verify(context.Background(), s)
		if err == nil && keystore.CheckName(user.Owner.Name) != nil {
			t.Fatalf("accepted with an invalid user %q", user.Owner.Name)
		}
		if err != nil && !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("error %v does not wrap ErrInvalidToken", err)
		}
	})
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// otherFirstChar changes the first character of a base64url string, which
// always changes the decoded bytes.
func otherFirstChar(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// respelt sets an unused low bit of the last character of an unpadded
// base64url string whose length leaves some (an RS256 signature's 342
// characters leave four): a lenient decoder reads the same bytes.
func respelt(s string) string {
	i := strings.IndexByte(base64URLAlphabet, s[len(s)-1])
	return s[:len(s)-1] + string(base64URLAlphabet[i^1])
}

// A block without an issuer takes tokens of any issuer, and files each
// under its own: two issuers' carol are two owners.
func TestJWTIssuerlessBlockSeparatesIssuers(t *testing.T) {
	v, err := NewJWTVerifier(JWTConfig{AnyAudience: true, HMACSecrets: [][]byte{testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]string{}
	for _, iss := range []string{"https://tenant-one.test", "https://tenant-two.test", ""} {
		c := jwt.MapClaims{"sub": "carol", "exp": time.Now().Add(time.Hour).Unix()}
		if iss != "" {
			c["iss"] = iss
		}
		id, err := JWTIssuers{v}.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, testSecret, c))
		if err != nil {
			t.Fatal(err)
		}
		owners[iss] = id.Owner.Source
	}
	if owners["https://tenant-one.test"] != "jwt:https://tenant-one.test" || owners["https://tenant-two.test"] != "jwt:https://tenant-two.test" || owners[""] != "jwt" {
		t.Fatalf("sources: %v", owners)
	}
}
