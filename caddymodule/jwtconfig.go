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
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// DefaultJWTKeyLifetime caps the keys that token identities mint unless a
// jwt block sets max_key_lifetime: the gateway cannot see a user disabled
// at the issuer, so their keys expire instead.
const DefaultJWTKeyLifetime = 90 * 24 * time.Hour

// JWTConfig says which OAuth2 JWTs prove a user's identity. Every token
// must carry "exp"; algorithms are bound to the family of the configured
// keys, so "none" and HS tokens checked against a public key are refused.
//
// A token's identity is an owner in the issuer's own namespace: the
// issuer's "alice" is not the password user "alice" and cannot see or
// manage their keys, unless namespace is "password".
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

	// The "aud" claim must contain one of these: the identifiers this
	// gateway is known by at the issuer. Required (RFC 9068 §4: a token
	// the issuer made for another client must not be accepted here)
	// unless accept_any_audience is set.
	Audiences []string `json:"audiences,omitempty"`

	// Accept tokens whatever their audience. Only for issuers that make
	// tokens for this gateway alone, such as a shared secret used by one
	// application. Default: false.
	AcceptAnyAudience bool `json:"accept_any_audience,omitempty"`

	// If set, the token's "typ" header must be this (compared without
	// case and an "application/" prefix), e.g. "at+jwt" (RFC 9068) so
	// that ID tokens cannot be used as access tokens. Default: any.
	TokenType string `json:"token_type,omitempty"`

	// The owner namespace of the identities: keys are owned by the
	// identity within it. "password" makes a token's identity the
	// password user (config or store) of that name, which must then
	// exist: only for an issuer that vouches for exactly those users.
	// Another name may be shared by several jwt blocks on purpose.
	// Default: jwt:<issuer> (without issuer: "jwt:" followed by each
	// token's own "iss").
	Namespace string `json:"namespace,omitempty"`

	// Scopes this issuer's tokens may pass on to keys: a key may have a
	// scope that the token carries (in "scope" or "scp") and that is
	// listed here; a mint asking for another is refused with 403.
	// Default: none, so the keys of token identities have no scopes.
	AllowedScopes []string `json:"allowed_scopes,omitempty"`

	// Longest lifetime of keys minted with this issuer's tokens, also
	// when rotated (and the default lifetime of keys minted without one):
	// the gateway cannot see an identity disabled at the issuer, so its
	// keys expire instead. 0 means no cap beyond the app's
	// max_key_lifetime. Default: 2160h (90 days).
	MaxKeyLifetime *caddy.Duration `json:"max_key_lifetime,omitempty"`

	// The plan of keys minted with these tokens, unless a key has its
	// own. Default: the app's default_plan.
	Plan string `json:"plan,omitempty"`

	// The claim holding the username. Default: "sub".
	IdentityClaim string `json:"identity_claim,omitempty"`

	// Clock skew tolerated on "exp", "nbf" and "iat". Default: 30s.
	Leeway caddy.Duration `json:"leeway,omitempty"`

	// URL of the issuer's JWK Set, fetched in the background; tokens then
	// name their key by "kid". A token with a key id not yet known waits
	// (at most 1s) for the set to be fetched again, which picks up keys
	// rotated at the issuer; such fetches happen at most once a second,
	// so made-up key ids cannot make the gateway fetch more. Must be https
	// (plain http only to a loopback address); redirects to http are not
	// followed.
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
		AnyAudience:    c.AcceptAnyAudience,
		TokenType:      c.TokenType,
		Namespace:      c.Namespace,
		AllowedScopes:  c.AllowedScopes,
		MaxKeyLifetime: DefaultJWTKeyLifetime,
	}
	if c.MaxKeyLifetime != nil {
		cfg.MaxKeyLifetime = time.Duration(*c.MaxKeyLifetime)
	}
	for _, sc := range c.AllowedScopes {
		if err := keystore.CheckScope(sc); err != nil {
			return cfg, fmt.Errorf("allowed_scopes: %w", err)
		}
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
