package identity

import (
	"context"
	"crypto/sha256"
)

// Tokens is the source of token identities: OAuth2 JWTs from the trusted
// issuers, each verification remembered while it holds (the token's exp,
// the issuer's keys), so that repeat sign-ins with one token are cheap.
type Tokens struct {
	issuers JWTIssuers
	cache   *tokenCache
}

// NewTokens returns the source of issuers' tokens, remembering up to
// cacheSize verifications (default 1000; negative remembers none).
func NewTokens(issuers JWTIssuers, cacheSize int) *Tokens {
	if cacheSize == 0 {
		cacheSize = 1000
	}
	t := &Tokens{issuers: issuers}
	if cacheSize > 0 {
		t.cache = newTokenCache(cacheSize)
	}
	return t
}

// Kind is KindOAuth2.
func (t *Tokens) Kind() Kind { return KindOAuth2 }

// Authenticate verifies the token, or finds it verified still.
func (t *Tokens) Authenticate(ctx context.Context, cred Credential, _ string) (Identity, error) {
	tok, err := t.verify(ctx, cred.Token)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Owner: tok.Owner, FromToken: true, Scopes: tok.Scopes, MaxKeyLifetime: tok.MaxKeyLifetime}, nil
}

func (t *Tokens) verify(ctx context.Context, token string) (TokenIdentity, error) {
	if t.cache == nil {
		return t.issuers.Verify(ctx, token)
	}
	key := sha256.Sum256([]byte(token))
	if id, ok := t.cache.get(key); ok {
		return id, nil
	}
	id, err := t.issuers.Verify(ctx, token)
	if err == nil {
		t.cache.put(key, id)
	}
	return id, err
}
