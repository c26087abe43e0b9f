package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// jwksServer serves a JWK Set that the test can change, and can be made
// to hang.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    map[string]any // kid -> public key
	algs    map[string]string
	hang    chan struct{} // while non-nil, requests block on it
	fetches int
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{keys: map[string]any{}, algs: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		hang := s.hang
		s.fetches++
		s.mu.Unlock()
		if hang != nil {
			<-hang
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		var set jwkset.JWKSMarshal
		for kid, key := range s.keys {
			jwk, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.ALG(s.algs[kid])}})
			if err != nil {
				t.Error(err)
				return
			}
			set.Keys = append(set.Keys, jwk.Marshal())
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(kid string, key any, alg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if key == nil {
		delete(s.keys, kid)
		return
	}
	s.keys[kid], s.algs[kid] = key, alg
}

func signKID(t *testing.T, m jwt.SigningMethod, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, validClaims())
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWKSRotation(t *testing.T) {
	srv := newJWKSServer(t)
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv.set("k1", &k1.PublicKey, "RS256")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := NewJWKSSource(ctx, JWKSConfig{URL: srv.URL, Refresh: time.Hour, UnknownKIDRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewJWTVerifier(JWTConfig{JWKS: src, Issuer: "https://idp.test", Audiences: []string{"apikeys"}})
	if err != nil {
		t.Fatal(err)
	}
	old := signKID(t, jwt.SigningMethodRS256, k1, "k1")
	testutil.Eventually(t, 10*time.Second, "first fetch", func() bool { _, err := v.Verify(context.Background(), old); return err == nil })

	// Rotation at the issuer: k2 appears, k1 goes. The very first token
	// signed with k2 is accepted: it waits for the fetch it causes.
	srv.set("k2", &k2.PublicKey, "RS256")
	srv.set("k1", nil, "")
	fresh := signKID(t, jwt.SigningMethodRS256, k2, "k2")
	if _, err := v.Verify(context.Background(), fresh); err != nil {
		t.Fatalf("first token signed with the new key: %v", err)
	}
	if _, err := v.Verify(context.Background(), old); err == nil {
		t.Fatal("token signed with a removed key accepted")
	}
	cancel()
	<-src.Done()
}

// Tokens with made-up key ids, many at once, cause at most one fetch per
// UnknownKIDRefresh, and every one of them waits for that same fetch.
func TestJWKSForgedKIDsFetchOncePerInterval(t *testing.T) {
	srv := newJWKSServer(t)
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv.set("k1", &k1.PublicKey, "RS256")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := NewJWKSSource(ctx, JWKSConfig{URL: srv.URL, Refresh: time.Hour, UnknownKIDRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewJWTVerifier(JWTConfig{JWKS: src, AnyAudience: true})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "first fetch", func() bool {
		_, err := v.Verify(context.Background(), signKID(t, jwt.SigningMethodRS256, k1, "k1"))
		return err == nil
	})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			forged := signKID(t, jwt.SigningMethodRS256, k1, "forged-"+strconv.Itoa(i))
			if _, err := v.Verify(context.Background(), forged); err == nil {
				t.Error("token with a made-up kid accepted")
			}
		})
	}
	wg.Wait()
	srv.mu.Lock()
	fetches := srv.fetches
	srv.mu.Unlock()
	if fetches != 2 {
		t.Fatalf("%d fetches for the start and 200 made-up kids, want 2", fetches)
	}
}

// A made-up key id that just used the fetch budget does not make the first
// token of a real rotation fail: it waits for the next allowed fetch.
func TestJWKSRotationRightAfterAMadeUpKID(t *testing.T) {
	srv := newJWKSServer(t)
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv.set("k1", &k1.PublicKey, "RS256")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := NewJWKSSource(ctx, JWKSConfig{URL: srv.URL, Refresh: time.Hour, UnknownKIDRefresh: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewJWTVerifier(JWTConfig{JWKS: src, AnyAudience: true})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "first fetch", func() bool {
		_, err := v.Verify(context.Background(), signKID(t, jwt.SigningMethodRS256, k1, "k1"))
		return err == nil
	})
	testutil.Eventually(t, 10*time.Second, "the budget of unknown-kid fetches back", func() bool { return src.limiter.Tokens() >= 1 })
	if _, err := v.Verify(context.Background(), signKID(t, jwt.SigningMethodRS256, k1, "made-up")); err == nil {
		t.Fatal("made-up kid accepted")
	}
	srv.set("k2", &k2.PublicKey, "RS256")
	if _, err := v.Verify(context.Background(), signKID(t, jwt.SigningMethodRS256, k2, "k2")); err != nil {
		t.Fatalf("first token of the rotation, right after a made-up kid: %v", err)
	}
}

func TestJWKSDownNeverBlocks(t *testing.T) {
	srv := newJWKSServer(t)
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv.set("k1", &k1.PublicKey, "")
	hang := make(chan struct{})
	srv.mu.Lock()
	srv.hang = hang // every fetch hangs until the test ends
	srv.mu.Unlock()
	defer close(hang)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const wait = 50 * time.Millisecond
	src, err := NewJWKSSource(ctx, JWKSConfig{URL: srv.URL, Timeout: time.Hour, UnknownKIDRefresh: time.Millisecond, UnknownKIDWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewJWTVerifier(JWTConfig{AnyAudience: true, JWKS: src})
	if err != nil {
		t.Fatal(err)
	}
	tok := signKID(t, jwt.SigningMethodRS256, k1, "k1")
	// The JWKS host holds every request open; verifications, 100 at
	// once, must still answer, each after at most the bounded wait.
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if _, err := v.Verify(context.Background(), tok); err == nil || !strings.Contains(err.Error(), "signature or algorithm") {
				t.Errorf("with the JWKS host hanging: %v", err)
			}
		})
	}
	wg.Wait()
	srv.mu.Lock()
	fetches := srv.fetches
	srv.mu.Unlock()
	if fetches != 1 {
		t.Fatalf("%d fetches in flight, want 1 (refreshes must not pile up)", fetches)
	}
}

func TestJWKSURLsMustBeHTTPS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, u := range []string{"http://idp.example.com/jwks.json", "ftp://127.0.0.1/x", "http:///x", "https://"} {
		if _, err := NewJWKSSource(ctx, JWKSConfig{URL: u}); err == nil {
			t.Errorf("JWKS URL %q accepted", u)
		}
		if _, err := NewJWKSSource(ctx, JWKSConfig{DiscoverFrom: u}); err == nil {
			t.Errorf("issuer %q accepted for discovery", u)
		}
	}
	for _, u := range []string{"https://idp.example.com/jwks.json", "http://127.0.0.1:4444/jwks", "http://[::1]/jwks", "http://localhost/jwks"} {
		if _, err := NewJWKSSource(ctx, JWKSConfig{URL: u}); err != nil {
			t.Errorf("JWKS URL %q refused: %v", u, err)
		}
	}
}

// A redirect from https to http is never followed, nor one from a
// loopback http URL to a remote one.
func TestJWKSRedirectsNeverDowngrade(t *testing.T) {
	for _, tc := range []struct{ name, from, to string }{
		{"https to http", "https://idp.example/jwks", "http://idp.example/jwks"},
		{"https to loopback http", "https://idp.example/jwks", "http://127.0.0.1/jwks"},
		{"loopback to remote http", "http://127.0.0.1/jwks", "http://idp.example/jwks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, _ := http.NewRequest("GET", tc.from, nil)
			to, _ := http.NewRequest("GET", tc.to, nil)
			if err := RefuseUnsafeRedirects(to, []*http.Request{from}); err == nil {
				t.Errorf("redirect from %s to %s followed", tc.from, tc.to)
			}
		})
	}
	from, _ := http.NewRequest("GET", "https://idp.example/jwks", nil)
	to, _ := http.NewRequest("GET", "https://cdn.idp.example/jwks", nil)
	if err := RefuseUnsafeRedirects(to, []*http.Request{from}); err != nil {
		t.Errorf("https to https redirect refused: %v", err)
	}

	// And through a real client: a JWKS host on loopback redirecting to
	// a plain-http remote host is not followed.
	redirecting := httptest.NewServer(http.RedirectHandler("http://jwks.invalid/keys", http.StatusFound))
	defer redirecting.Close()
	var errs []error
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := NewJWKSSource(ctx, JWKSConfig{URL: redirecting.URL, OnError: func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the refused redirect reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(errs) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(errs[0].Error(), "must use https") {
		t.Fatalf("fetch error %v, want the redirect refused", errs[0])
	}
	cancel()
	<-src.Done()
}

func TestJWKSAlgorithmPinningAndKIDs(t *testing.T) {
	srv := newJWKSServer(t)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv.set("rsa-ps", &rk.PublicKey, "PS256")
	srv.set("ec", &ek.PublicKey, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, _ := NewJWKSSource(ctx, JWKSConfig{URL: srv.URL})
	v, err := NewJWTVerifier(JWTConfig{AnyAudience: true, JWKS: src})
	if err != nil {
		t.Fatal(err)
	}
	good := signKID(t, jwt.SigningMethodPS256, rk, "rsa-ps")
	testutil.Eventually(t, 10*time.Second, "fetch", func() bool { _, err := v.Verify(context.Background(), good); return err == nil })
	hmacWithPub := jwt.NewWithClaims(jwt.SigningMethodHS256, validClaims())
	hmacWithPub.Header["kid"] = "rsa-ps"
	hs, _ := hmacWithPub.SignedString([]byte("anything-at-all-32-bytes-long!!!"))
	cases := map[string]string{
		"RS256 with a key pinned to PS256": signKID(t, jwt.SigningMethodRS256, rk, "rsa-ps"),
		"ES256 token naming an RSA key":    signKID(t, jwt.SigningMethodES256, ek, "rsa-ps"),
		"RS256 token naming an EC key":     signKID(t, jwt.SigningMethodRS256, rk, "ec"),
		"HS256 naming a public key":        hs,
		"path injection kid":               signKID(t, jwt.SigningMethodPS256, rk, "../../etc/passwd"),
		"URL kid":                          signKID(t, jwt.SigningMethodPS256, rk, "https://evil.test/jwks.json"),
		"oversized kid":                    signKID(t, jwt.SigningMethodPS256, rk, strings.Repeat("k", 300)),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(context.Background(), tok); err == nil {
				t.Errorf("%s: accepted", name)
			}
		})
	}
	if _, err := v.Verify(context.Background(), signKID(t, jwt.SigningMethodES256, ek, "ec")); err != nil {
		t.Fatalf("ES256 with its EC key: %v", err)
	}
}

func TestJWTIssuersAndRequiredClaims(t *testing.T) {
	a, err := NewJWTVerifier(JWTConfig{AnyAudience: true, HMACSecrets: [][]byte{testSecret}, Issuer: "https://a.test", RequiredScopes: []string{"apikeys:write"}})
	if err != nil {
		t.Fatal(err)
	}
	other := []byte("another-secret-that-is-32-bytes!")
	b, err := NewJWTVerifier(JWTConfig{AnyAudience: true, HMACSecrets: [][]byte{other}, Issuer: "https://b.test", IdentityClaim: "email", RequiredClaims: map[string]string{"azp": "portal"}})
	if err != nil {
		t.Fatal(err)
	}
	is := JWTIssuers{a, b}
	tok := func(secret []byte, c jwt.MapClaims) string {
		c["exp"] = time.Now().Add(time.Hour).Unix()
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
		return s
	}
	ok := map[string]struct{ tok, user string }{
		"a with scope":        {tok(testSecret, jwt.MapClaims{"iss": "https://a.test", "sub": "al", "scope": "openid apikeys:write"}), "al"},
		"a with scp list":     {tok(testSecret, jwt.MapClaims{"iss": "https://a.test", "sub": "al", "scp": []string{"apikeys:write"}}), "al"},
		"b with azp in email": {tok(other, jwt.MapClaims{"iss": "https://b.test", "email": "bo@b.test", "azp": "portal"}), "bo@b.test"},
	}
	for name, c := range ok {
		t.Run(name, func(t *testing.T) {
			if user, err := is.Verify(context.Background(), c.tok); err != nil || user.Owner.Name != c.user {
				t.Errorf("%s: %+v, %v", name, user, err)
			}
		})
	}
	bad := map[string]string{
		"a without scope":       tok(testSecret, jwt.MapClaims{"iss": "https://a.test", "sub": "al", "scope": "openid"}),
		"b without azp":         tok(other, jwt.MapClaims{"iss": "https://b.test", "email": "bo@b.test"}),
		"b token, a's secret":   tok(testSecret, jwt.MapClaims{"iss": "https://b.test", "email": "bo@b.test", "azp": "portal"}),
		"unknown issuer":        tok(testSecret, jwt.MapClaims{"iss": "https://c.test", "sub": "x", "scope": "apikeys:write"}),
		"no issuer, none unset": tok(testSecret, jwt.MapClaims{"sub": "x", "scope": "apikeys:write"}),
		"garbage":               "x.y.z",
	}
	for name, tk := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := is.Verify(context.Background(), tk); err == nil {
				t.Errorf("%s: accepted", name)
			}
		})
	}
}

// A JWK Set is read once, strictly: a set in which a key names a member
// twice (its "kid" in another letter case, say) is refused whole, and its
// keys verify nothing, whichever spelling a token's "kid" uses.
func TestJWKSIsReadOnce(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	jwk, err := jwkset.NewJWKFromKey(&k.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "a", ALG: jwkset.ALG("RS256")}})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	var body atomic.Pointer[[]byte]
	ambiguous := []byte(strings.Replace(string(good), `"kid":"a"`, `"kid":"a","KID":"b"`, 1))
	body.Store(&ambiguous)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(*body.Load()) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := NewJWKSSource(ctx, JWKSConfig{URL: srv.URL, Refresh: time.Hour, UnknownKIDRefresh: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewJWTVerifier(JWTConfig{JWKS: src, Issuer: "https://idp.test", Audiences: []string{"apikeys"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, kid := range []string{"a", "b"} {
		if _, err := v.Verify(context.Background(), signKID(t, jwt.SigningMethodRS256, k, kid)); err == nil {
			t.Fatalf("kid %q verified with a key from an ambiguous set", kid)
		}
	}
	body.Store(&good)
	testutil.Eventually(t, 10*time.Second, "the well-formed set", func() bool {
		_, err := v.Verify(context.Background(), signKID(t, jwt.SigningMethodRS256, k, "a"))
		return err == nil
	})
}
