package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

func oauth2(tok string) Credential { return Credential{Kind: KindOAuth2, Token: tok} }

// A token verified once is not parsed and verified again while it could
// not fail: repeat sign-ins with it cost a digest and a map lookup.
func TestVerifiedTokensAreCached(t *testing.T) {
	jv, err := NewJWTVerifier(JWTConfig{HMACSecrets: [][]byte{testSecret}, Issuer: "https://idp.test", Audiences: []string{"apikeys"}})
	if err != nil {
		t.Fatal(err)
	}
	v := NewTokens(JWTIssuers{jv}, 0)
	tok := sign(t, jwt.SigningMethodHS256, testSecret, validClaims())
	first, err := v.Authenticate(context.Background(), oauth2(tok), "")
	if err != nil || first.Owner.Name != "alice" {
		t.Fatalf("%+v, %v", first, err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if id, err := v.Authenticate(context.Background(), oauth2(tok), ""); err != nil || id.Owner != first.Owner {
			t.Fatalf("%+v, %v", id, err)
		}
	})
	if allocs > 3 { // a verification allocates about a hundred times
		t.Fatalf("a cached token costs %v allocations: it was verified again", allocs)
	}
	// A failed verification is not remembered: the same bad token fails
	// each time, and a good one is unaffected.
	bad := tok[:len(tok)-2] + "xx"
	for range 2 {
		if _, err := v.Authenticate(context.Background(), oauth2(bad), ""); err == nil {
			t.Fatal("a token with a bad signature accepted")
		}
	}
}

// A cached token stops working when its exp (with the leeway) passes, as
// an uncached one would (in a bubble of fake time).
func TestCachedTokenExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		jv, err := NewJWTVerifier(JWTConfig{HMACSecrets: [][]byte{testSecret}, AnyAudience: true, Leeway: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		v := NewTokens(JWTIssuers{jv}, 0)
		tok := sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(10 * time.Second).Unix()})
		if _, err := v.Authenticate(context.Background(), oauth2(tok), ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(14 * time.Second) // exp passed, within the leeway
		if _, err := v.Authenticate(context.Background(), oauth2(tok), ""); err != nil {
			t.Fatalf("within the leeway: %v", err)
		}
		time.Sleep(2 * time.Second)
		if _, err := v.Authenticate(context.Background(), oauth2(tok), ""); err == nil {
			t.Fatal("an expired token accepted from the cache")
		}
	})
}

// When the issuer's JWK Set changes, tokens verified under the old keys
// are verified again: one signed with a key the issuer dropped stops
// working at the next fetch.
func TestCachedTokenFollowsKeyChanges(t *testing.T) {
	srv := newJWKSServer(t)
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv.set("k1", &k1.PublicKey, "RS256")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := NewJWKSSource(ctx, JWKSConfig{URL: srv.URL, Refresh: 100 * time.Millisecond, UnknownKIDRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	jv, err := NewJWTVerifier(JWTConfig{JWKS: src, Issuer: "https://idp.test", Audiences: []string{"apikeys"}})
	if err != nil {
		t.Fatal(err)
	}
	v := NewTokens(JWTIssuers{jv}, 0)
	old := signKID(t, jwt.SigningMethodRS256, k1, "k1")
	testutil.Eventually(t, 10*time.Second, "the first fetch", func() bool {
		_, err := v.Authenticate(context.Background(), oauth2(old), "")
		return err == nil
	})
	srv.set("k2", &k2.PublicKey, "RS256")
	srv.set("k1", nil, "")
	testutil.Eventually(t, 10*time.Second, "the token signed with the dropped key refused", func() bool {
		_, err := v.Authenticate(context.Background(), oauth2(old), "")
		return err != nil
	})
	if _, err := v.Authenticate(context.Background(), oauth2(signKID(t, jwt.SigningMethodRS256, k2, "k2")), ""); err != nil {
		t.Fatalf("a token signed with the new key: %v", err)
	}
	cancel()
	<-src.Done()
}
