package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
)

// JWTConfig says which OAuth2 JWTs prove a user's identity. Every token
// must carry "exp"; algorithms are bound to the family of the configured
// keys, so "none" and HS tokens checked against a public key are refused.
type JWTConfig struct {
	// HMAC secrets for HS256, HS384 and HS512 tokens, at least 32 bytes
	// each. Use placeholders such as {env.JWT_SECRET} or
	// {file./run/secrets/jwt} rather than writing a secret in the config.
	Secrets []string `json:"secrets,omitempty"`

	// PEM-encoded public keys (RSA ≥ 2048 bits, ECDSA P-256/384/521, or
	// Ed25519) for RS*, PS*, ES* and EdDSA tokens. Placeholders are
	// expanded.
	PublicKeys []string `json:"public_keys,omitempty"`

	// Files holding PEM-encoded public keys, read at load time.
	PublicKeyFiles []string `json:"public_key_files,omitempty"`

	// Accepted algorithms, e.g. ["RS256"]. Each must have a key of its
	// family. Default: every algorithm the configured keys support.
	Algorithms []string `json:"algorithms,omitempty"`

	// If set, the "iss" claim must equal it.
	Issuer string `json:"issuer,omitempty"`

	// If set, the "aud" claim must contain one of these.
	Audiences []string `json:"audiences,omitempty"`

	// The claim holding the username. Default: "sub".
	IdentityClaim string `json:"identity_claim,omitempty"`

	// Clock skew tolerated on "exp", "nbf" and "iat". Default: 30s.
	Leeway caddy.Duration `json:"leeway,omitempty"`

	// URL of the issuer's JWK Set, fetched in the background; tokens then
	// name their key by "kid". Requests never wait on it: a token with a
	// key id not yet known is refused and makes the set be fetched again
	// (at most every 30s), which picks up rotated keys.
	JWKSURL string `json:"jwks_url,omitempty"`

	// Find the JWK Set by OpenID Connect discovery from issuer
	// (<issuer>/.well-known/openid-configuration) instead of jwks_url.
	Discover bool `json:"discover,omitempty"`

	// How often the JWK Set is fetched again. Default: 10m.
	JWKSRefresh caddy.Duration `json:"jwks_refresh,omitempty"`

	// Scopes the token must all carry (in "scope" or "scp"), e.g.
	// ["apikeys:write"] so that only such tokens may manage keys.
	RequiredScopes []string `json:"required_scopes,omitempty"`

	// Claims the token must carry with the given value (or, for a list
	// claim, contain it), e.g. {"azp": "my-portal"}.
	RequiredClaims map[string]string `json:"required_claims,omitempty"`
}

func (c *JWTConfig) resolve(ctx context.Context, repl *caddy.Replacer, logger *zap.Logger) (identity.JWTConfig, error) {
	cfg := identity.JWTConfig{
		Algorithms:     c.Algorithms,
		Issuer:         repl.ReplaceKnown(c.Issuer, ""),
		IdentityClaim:  c.IdentityClaim,
		Leeway:         time.Duration(c.Leeway),
		RequiredScopes: c.RequiredScopes,
		RequiredClaims: c.RequiredClaims,
	}
	if c.JWKSURL != "" || c.Discover {
		if c.Discover && cfg.Issuer == "" {
			return cfg, errors.New("discover needs issuer")
		}
		jc := identity.JWKSConfig{URL: repl.ReplaceKnown(c.JWKSURL, ""), Refresh: time.Duration(c.JWKSRefresh),
			OnError: func(err error) { logger.Warn("fetching JWK Set", zap.Error(err)) }}
		if c.Discover {
			jc.URL, jc.DiscoverFrom = "", cfg.Issuer
		}
		src, err := identity.NewJWKSSource(ctx, jc)
		if err != nil {
			return cfg, err
		}
		cfg.JWKS = src
	}
	for _, a := range c.Audiences {
		cfg.Audiences = append(cfg.Audiences, repl.ReplaceKnown(a, ""))
	}
	for i, s := range c.Secrets {
		secret := repl.ReplaceKnown(s, "")
		if secret == "" {
			return cfg, fmt.Errorf("secret %d is empty (unset environment variable?)", i)
		}
		cfg.HMACSecrets = append(cfg.HMACSecrets, []byte(secret))
	}
	pems := make([]string, 0, len(c.PublicKeys)+len(c.PublicKeyFiles))
	for _, p := range c.PublicKeys {
		pems = append(pems, repl.ReplaceKnown(p, ""))
	}
	for _, f := range c.PublicKeyFiles {
		data, err := os.ReadFile(repl.ReplaceKnown(f, ""))
		if err != nil {
			return cfg, fmt.Errorf("reading public key: %w", err)
		}
		pems = append(pems, string(data))
	}
	for i, p := range pems {
		key, err := identity.ParsePublicKeyPEM([]byte(p))
		if err != nil {
			return cfg, fmt.Errorf("public key %d: %w", i, err)
		}
		cfg.PublicKeys = append(cfg.PublicKeys, key)
	}
	return cfg, nil
}
