package identity

import (
	"context"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Produced by 'caddy hash-password --algorithm argon2id' for "example_password".
const exampleArgon2id = "$argon2id$v=19$m=47104,t=1,p=1$Os+2VqnyVOt/eAughDMWig$63YBjjiv9I/CKopogUwBFi7b19vU1QgGP3IEUEPq9Iw"

func TestComparePassword(t *testing.T) {
	bc, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, hash, plain string
		want              bool
	}{
		{"bcrypt right password", string(bc), "s3cret", true},
		{"bcrypt wrong letter case", string(bc), "s3creT", false},
		{"argon2id right password", exampleArgon2id, "example_password", true},
		{"argon2id wrong last letter", exampleArgon2id, "example_passwore", false},
		{"argon2id empty password", exampleArgon2id, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ComparePassword(c.hash, c.plain)
			if err != nil || got != c.want {
				t.Errorf("ComparePassword(%.12s…, %q) = %v, %v; want %v", c.hash, c.plain, got, err, c.want)
			}
		})
	}
	if _, err := ComparePassword("plaintext", "plaintext"); !errors.Is(err, ErrUnsupportedHash) {
		t.Fatalf("plaintext 'hash' accepted: %v", err)
	}
}

func TestNormalizeHash(t *testing.T) {
	// Older 'caddy hash-password' printed base64 of the hash.
	b64 := base64.StdEncoding.EncodeToString([]byte(exampleArgon2id))
	for _, in := range []string{exampleArgon2id, b64} {
		got, err := NormalizeHash(in)
		if err != nil || got != exampleArgon2id {
			t.Errorf("NormalizeHash(%.16s…) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "hunter2", "$1$abc$def", "$2a$10$short", "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=999999999,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5"} {
		if _, err := NormalizeHash(bad); err == nil {
			t.Errorf("NormalizeHash(%q) accepted", bad)
		}
	}
}

func TestFakeHashLikeKeepsAlgorithm(t *testing.T) {
	fake := FakeHashLike(exampleArgon2id)
	p, _, err := parseArgon2id(fake)
	if err != nil || p.memory != 47104 || p.time != 1 {
		t.Fatalf("fake hash %q: %+v, %v", fake, p, err)
	}
	if ok, _ := ComparePassword(fake, "example_password"); ok {
		t.Fatal("fake hash matches the real password")
	}
	bc, _ := bcrypt.GenerateFromPassword([]byte("x"), 5)
	if cost, err := bcrypt.Cost([]byte(FakeHashLike(string(bc)))); err != nil || cost != 5 {
		t.Fatalf("fake bcrypt hash has cost %d, %v; want 5", cost, err)
	}
	if FakeHashLike("$2a$14$X3ulqf/iGxnf1k6oMZ.RZeJUoqI9PX2PM4rS5lkIKJXduLGXGPrt6") != fakeBcrypt {
		t.Fatal("cost 14 should use the precomputed fake hash")
	}
}

func TestVerifierPasswords(t *testing.T) {
	stored, _ := bcrypt.GenerateFromPassword([]byte("bobpass"), bcrypt.MinCost)
	lookups := 0
	lookup := func(_ context.Context, name string) (string, bool, error) {
		lookups++
		if name == "bob" {
			return string(stored), true, nil
		}
		return "", false, nil
	}
	v := NewPasswords(map[string]string{"example_username": exampleArgon2id}, lookup, PasswordOptions{})
	ctx := context.Background()
	pw := func(u, p string) Credential { return Credential{Kind: KindPassword, Username: u, Password: p} }

	if u, err := v.Authenticate(ctx, pw("example_username", "example_password"), "192.0.2.1"); err != nil || u.Owner != keystore.PasswordUser("example_username") {
		t.Fatalf("configured user: %+v, %v", u, err)
	}
	if u, err := v.Authenticate(ctx, pw("bob", "bobpass"), "192.0.2.1"); err != nil || u.Owner != keystore.PasswordUser("bob") {
		t.Fatalf("stored user: %+v, %v", u, err)
	}
	for _, c := range []Credential{pw("example_username", "nope"), pw("bob", "nope"), pw("nobody", "x")} {
		if _, err := v.Authenticate(ctx, c, "192.0.2.1"); !errors.Is(err, ErrBadCredentials) || err.Error() != ErrBadCredentials.Error() {
			t.Errorf("%s: %v, want the one generic message", c.Username, err)
		}
	}
	// No source checks API keys: refused before anything is looked up.
	before := lookups
	verifier := NewVerifier(v)
	if _, err := verifier.Authenticate(ctx, Credential{Kind: KindAPIKey}, ""); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("API key: %v", err)
	}
	if lookups != before {
		t.Fatal("API key caused a user lookup")
	}
	if _, err := verifier.Authenticate(ctx, Credential{Kind: KindOAuth2, Token: "x"}, ""); !errors.Is(err, ErrOAuth2Disabled) {
		t.Fatalf("token without JWT config: %v", err)
	}
}

func TestVerifierStoreFault(t *testing.T) {
	boom := errors.New("disk on fire")
	v := NewPasswords(nil, func(context.Context, string) (string, bool, error) { return "", false, boom }, PasswordOptions{})
	_, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: "u", Password: "p"}, "")
	if !errors.Is(err, boom) || errors.Is(err, ErrBadCredentials) {
		t.Fatalf("store fault reported as %v", err)
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := NormalizeHash(h); err != nil || n != h {
		t.Fatalf("HashPassword output %q does not normalise: %v", h, err)
	}
	for _, c := range []struct {
		name, pw string
		want     bool
	}{
		{"same password", "correct horse", true},
		{"one letter case changed", "correct horsE", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if ok, err := ComparePassword(h, c.pw); err != nil || ok != c.want {
				t.Errorf("ComparePassword(%q) = %v, %v", c.pw, ok, err)
			}
		})
	}
	if h2, _ := HashPassword("correct horse"); h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
}

func TestVerifierLockout(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	th := NewThrottle(LockoutPolicy{AccountThreshold: 3}, nil)
	v := NewPasswords(map[string]string{"alice": string(h)}, nil, PasswordOptions{Throttle: th})
	ctx := context.Background()
	pw := func(u, p string) Credential { return Credential{Kind: KindPassword, Username: u, Password: p} }
	for _, user := range []string{"alice", "nobody"} {
		for range 3 {
			if _, err := v.Authenticate(ctx, pw(user, "wrong"), "192.0.2.1"); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("%s: %v", user, err)
			}
		}
		var locked *LockedOutError
		_, err := v.Authenticate(ctx, pw(user, "pw"), "192.0.2.1")
		if !errors.As(err, &locked) || locked.RetryAfterSeconds() != 60 {
			t.Fatalf("%s after 3 failures: %v, want a 60s lockout (same for unknown users)", user, err)
		}
	}
}

func TestVerifierBoundsConcurrentHashing(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), 10)
	v := NewPasswords(map[string]string{"alice": string(h)}, nil,
		PasswordOptions{MaxConcurrentHashes: 1, HashWait: time.Millisecond, SuccessCacheSize: -1})
	v.slots <- struct{}{} // the only slot is taken
	_, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: "alice", Password: "pw"}, "a")
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("with no free slot: %v, want ErrBusy", err)
	}
	<-v.slots
	if _, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: "alice", Password: "pw"}, "a"); err != nil {
		t.Fatal(err)
	}
}

func TestVerifierCachesSuccessesOnly(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	v := NewPasswords(map[string]string{"alice": string(h)}, nil, PasswordOptions{})
	ctx := context.Background()
	cred := Credential{Kind: KindPassword, Username: "alice", Password: "pw"}
	if _, err := v.Authenticate(ctx, cred, "a"); err != nil {
		t.Fatal(err)
	}
	if len(v.cache.m) != 1 {
		t.Fatalf("cache holds %d entries after a success", len(v.cache.m))
	}
	// A cached success needs no hashing slot.
	for range cap(v.slots) {
		v.slots <- struct{}{}
	}
	v.opts.HashWait = time.Millisecond
	if _, err := v.Authenticate(ctx, cred, "a"); err != nil {
		t.Fatalf("cached success: %v", err)
	}
	if _, err := v.Authenticate(ctx, Credential{Kind: KindPassword, Username: "alice", Password: "nope"}, "a"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a wrong password must be hashed, not cached: %v", err)
	}
}
