package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
const DefaultLeeway = 30 * time.Second

// DefaultIdentityClaim names the claim that holds the username.
const DefaultIdentityClaim = "sub"

// MinHMACSecretLen is the shortest HMAC secret accepted (RFC 7518 §3.2
// asks for a key at least as long as the hash output of HS256).
const MinHMACSecretLen = 32

// JWTConfig says which tokens a JWTVerifier trusts.
type JWTConfig struct {
	// HMACSecrets verify HS256/384/512 tokens.
	HMACSecrets [][]byte
	// PublicKeys verify RS/PS (RSA), ES (ECDSA) and EdDSA (Ed25519) tokens.
	PublicKeys []crypto.PublicKey
	// Algorithms, if set, narrows the accepted algorithms; each must have
	// a key of its family. Default: every algorithm the keys support.
	Algorithms []string
	// Issuer, if set, must equal the "iss" claim.
	Issuer string
	// Audiences: the "aud" claim must contain one of them. Required
	// unless AnyAudience: RFC 9068 §4 has a resource server check that
	// an access token was issued for it, or a token the issuer made for
	// any other client would do.
	Audiences []string
	// AnyAudience accepts tokens whatever their "aud", when Audiences is
	// empty.
	AnyAudience bool
	// TokenType, if set, must equal the header's "typ" (case-insensitive,
	// with or without "application/"), e.g. "at+jwt" to refuse ID tokens.
	TokenType string
	// Namespace is the owner source of the issuer's identities: "password"
	// (keystore.SourcePassword) makes them the password users of the same
	// names. Default: "jwt:" and the issuer; without an issuer, "jwt:" and
	// each token's own "iss" ("jwt" for tokens without one), so that the
	// issuers such a block accepts do not share owners.
	Namespace string
	// AllowedScopes are the scopes the issuer's tokens may pass on to
	// keys: a key may have a scope that its token carries ("scope" or
	// "scp") and that is listed here. Default: none.
	AllowedScopes []string
	// MaxKeyLifetime caps the keys minted with the issuer's tokens, so
	// that an identity disabled at the issuer does not keep working keys
	// for ever; 0 means no cap.
	MaxKeyLifetime time.Duration
	// IdentityClaim holds the username. Default DefaultIdentityClaim.
	IdentityClaim string
	// Leeway for time claims. Default DefaultLeeway.
	Leeway time.Duration
	// JWKS, if set, supplies keys by the token's "kid".
	JWKS *JWKSSource
	// RequiredScopes must all appear in the "scope" (space separated) or
	// "scp" claim.
	RequiredScopes []string
	// RequiredClaims maps claim names to a value the claim must equal, or
	// contain when it is a list.
	RequiredClaims map[string]string
	// Now returns the current time; tests may replace it.
	Now func() time.Time
}

// JWTVerifier checks OAuth2 JWTs and extracts the username.
type JWTVerifier struct {
	keys      map[string][]any // algorithm -> candidate keys
	allowed   map[string]bool  // algorithms accepted, from any source
	jwks      *JWKSSource
	validator *jwt.Validator
	// readClaims are the claims this block reads beyond the registered
	// ones: the identity claim and the required claims.
	readClaims []string
	claim      string
	issuer     string
	audience   []string
	typ        string
	scopes     []string
	claims     map[string]string
	namespace  string
	grantable  []string
	lifetime   time.Duration
	leeway     time.Duration
	now        func() time.Time
}

// asymmetric lists the algorithms a JWKS may serve keys for.
var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// NewJWTVerifier validates cfg and returns a verifier. Each algorithm is
// bound to the keys of its own family, so "none", an HS token checked
// against a public key, or an RS token against an EC key are all refused.
func NewJWTVerifier(cfg JWTConfig) (*JWTVerifier, error) {
	keys := make(map[string][]any)
	for i, s := range cfg.HMACSecrets {
		if len(s) < MinHMACSecretLen {
			return nil, fmt.Errorf("HMAC secret %d is %d bytes; at least %d are required", i, len(s), MinHMACSecretLen)
		}
		for _, alg := range []string{"HS256", "HS384", "HS512"} {
			keys[alg] = append(keys[alg], s)
		}
	}
	for i, pk := range cfg.PublicKeys {
		algs, err := algorithmsFor(pk)
		if err != nil {
			return nil, fmt.Errorf("public key %d: %w", i, err)
		}
		for _, alg := range algs {
			keys[alg] = append(keys[alg], pk)
		}
	}
	if len(keys) == 0 && cfg.JWKS == nil {
		return nil, errors.New("no HMAC secret, public key or JWKS configured")
	}
	if len(cfg.Audiences) == 0 && !cfg.AnyAudience {
		return nil, errors.New("no audience: name this gateway's audience (the \"aud\" its tokens carry), " +
			"since without it a token the issuer made for any other client would be accepted (RFC 9068 §4); " +
			"to accept every audience anyway, say so with accept_any_audience")
	}
	namespace := cfg.Namespace
	switch {
	case namespace == "" && cfg.Issuer != "":
		namespace = keystore.IssuerSource(cfg.Issuer)
	case namespace == keystore.SourceService:
		return nil, errors.New(`namespace "service" is for owners that operators make`)
	}
	if namespace != "" {
		if err := keystore.CheckSource(namespace); err != nil {
			return nil, fmt.Errorf("namespace: %w", err)
		}
	}
	if cfg.MaxKeyLifetime < 0 {
		return nil, errors.New("max_key_lifetime must not be negative")
	}
	allowed := make(map[string]bool)
	for alg := range keys {
		allowed[alg] = true
	}
	if cfg.JWKS != nil {
		for _, alg := range asymmetric {
			allowed[alg] = true
		}
	}
	if len(cfg.Algorithms) > 0 {
		narrowed := make(map[string]bool)
		for _, alg := range cfg.Algorithms {
			if !allowed[alg] {
				return nil, fmt.Errorf("algorithm %q has no configured key of its family", alg)
			}
			narrowed[alg] = true
		}
		allowed = narrowed
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	opts := []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	claim := cfg.IdentityClaim
	if claim == "" {
		claim = DefaultIdentityClaim
	}
	readClaims := []string{claim}
	for name := range cfg.RequiredClaims {
		readClaims = append(readClaims, name)
	}
	return &JWTVerifier{readClaims: readClaims, keys: keys, allowed: allowed, jwks: cfg.JWKS, validator: jwt.NewValidator(opts...), claim: claim,
		issuer: cfg.Issuer, audience: cfg.Audiences, typ: cfg.TokenType, scopes: cfg.RequiredScopes, claims: cfg.RequiredClaims,
		namespace: namespace, grantable: cfg.AllowedScopes, lifetime: cfg.MaxKeyLifetime, leeway: leeway, now: now}, nil
}

func algorithmsFor(pk crypto.PublicKey) ([]string, error) {
	switch k := pk.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too short (minimum 2048)", k.N.BitLen())
		}
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, errors.New("unsupported ECDSA curve")
	case ed25519.PublicKey:
		return []string{"EdDSA"}, nil
	}
	return nil, fmt.Errorf("unsupported public key type %T", pk)
}

// ParsePublicKeyPEM reads one PEM-encoded public key (PKIX "PUBLIC KEY",
// "RSA PUBLIC KEY", or the key of a "CERTIFICATE").
func ParsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	}
	return nil, fmt.Errorf("unexpected PEM block %q (want PUBLIC KEY or CERTIFICATE)", block.Type)
}

// ErrInvalidToken is wrapped by every Verify failure; the message of the
// returned error is safe to show to the caller.
var ErrInvalidToken = errors.New("invalid OAuth2 token")

type tokenError string

func (e tokenError) Error() string   { return "invalid OAuth2 token: " + string(e) }
func (tokenError) Is(err error) bool { return err == ErrInvalidToken || err == ErrBadCredentials }

// TokenIdentity is who a verified token says the caller is.
type TokenIdentity struct {
	// Owner is the identity claim within the issuer's namespace.
	Owner keystore.Owner
	// Scopes the token carries that its issuer may pass on to keys.
	Scopes []string
	// MaxKeyLifetime caps the keys minted with the token; 0: no cap.
	MaxKeyLifetime time.Duration

	// The verification holds until validUntil (the token's exp, with the
	// leeway), by issuer's clock, while its key set is at generation gen.
	issuer     *JWTVerifier
	validUntil time.Time
	gen        uint64
}

// Verify checks the token's signature and claims and returns who it is
// for. A token signed with a key id not known yet waits for the JWK Set
// as JWKSSource describes, within ctx.
func (v *JWTVerifier) Verify(ctx context.Context, token string) (TokenIdentity, error) {
	t, err := readToken(token)
	if err != nil {
		return TokenIdentity{}, err
	}
	return v.verify(ctx, t)
}

// verify checks a token read once: every decision below is taken from
// t's one reading.
func (v *JWTVerifier) verify(ctx context.Context, t *token) (TokenIdentity, error) {
	gen := v.keysGeneration() // before: a set that changes meanwhile voids the result
	if err := v.checkSignature(ctx, t); err != nil {
		return TokenIdentity{}, err
	}
	claims := t.claims
	if err := checkSpellings(claims, "payload", v.readClaims); err != nil {
		return TokenIdentity{}, err
	}
	if err := v.validator.Validate(claims); err != nil {
		return TokenIdentity{}, tokenError(describeJWTError(err))
	}
	if v.typ != "" {
		typ := t.str("typ")
		if !strings.EqualFold(strings.TrimPrefix(strings.ToLower(typ), "application/"), v.typ) {
			return TokenIdentity{}, tokenError(fmt.Sprintf("token type %q is not accepted (want %q)", typ, v.typ))
		}
	}
	if len(v.audience) > 0 {
		auds, err := claims.GetAudience()
		if err != nil || !slices.ContainsFunc(auds, func(a string) bool { return slices.Contains(v.audience, a) }) {
			return TokenIdentity{}, tokenError("audience is not accepted")
		}
	}
	carried := tokenScopes(claims)
	for _, want := range v.scopes {
		if !slices.Contains(carried, want) {
			return TokenIdentity{}, tokenError(fmt.Sprintf("token lacks the scope %q", want))
		}
	}
	for name, want := range v.claims {
		if !claimHas(claims[name], want) {
			return TokenIdentity{}, tokenError(fmt.Sprintf("claim %q does not have the required value", name))
		}
	}
	user, _ := claims[v.claim].(string)
	if user == "" {
		return TokenIdentity{}, tokenError(fmt.Sprintf("claim %q with the username is missing", v.claim))
	}
	if err := keystore.CheckName(user); err != nil {
		return TokenIdentity{}, tokenError(fmt.Sprintf("claim %q is not a valid user name: %v", v.claim, err))
	}
	ns, err := v.namespaceOf(t)
	if err != nil {
		return TokenIdentity{}, err
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil { // the parser requires exp: cannot happen
		return TokenIdentity{}, tokenError("token has no usable exp")
	}
	id := TokenIdentity{Owner: keystore.Owner{Source: ns, Name: user}, MaxKeyLifetime: v.lifetime,
		issuer: v, validUntil: exp.Add(v.leeway), gen: gen}
	for _, s := range carried {
		if slices.Contains(v.grantable, s) && !slices.Contains(id.Scopes, s) {
			id.Scopes = append(id.Scopes, s)
		}
	}
	return id, nil
}

// keysGeneration changes whenever the keys this verifier checks
// signatures with change (a JWK Set fetched with other keys); static keys
// never change.
func (v *JWTVerifier) keysGeneration() uint64 {
	if v.jwks == nil {
		return 0
	}
	return v.jwks.gen.Load()
}

// stillValid reports whether a verification of the token could be
// repeated with the same outcome now: its exp (with the leeway) is not
// past and the issuer's keys are the same.
func (id TokenIdentity) stillValid() bool {
	v := id.issuer
	return v != nil && v.now().Before(id.validUntil) && v.keysGeneration() == id.gen
}

// tokenScopes lists the scopes in the "scope" (space separated) and "scp"
// (string or list) claims.
func tokenScopes(claims jwt.MapClaims) []string {
	var have []string
	if s, ok := claims["scope"].(string); ok {
		have = strings.Fields(s)
	}
	switch scp := claims["scp"].(type) {
	case string:
		have = append(have, strings.Fields(scp)...)
	case []any:
		for _, x := range scp {
			if s, ok := x.(string); ok {
				have = append(have, s)
			}
		}
	}
	return have
}

func claimHas(v any, want string) bool {
	switch c := v.(type) {
	case string:
		return c == want
	case []any:
		for _, x := range c {
			if s, ok := x.(string); ok && s == want {
				return true
			}
		}
	}
	return false
}

// namespaceOf is the owner source of t's identity: the block's, or, for
// an issuer-less block, "jwt:" and the token's own issuer.
func (v *JWTVerifier) namespaceOf(t *token) (string, error) {
	if v.namespace != "" {
		return v.namespace, nil
	}
	iss, err := t.issuer()
	if err != nil {
		return "", err
	}
	ns := keystore.IssuerSource(iss)
	if err := keystore.CheckSource(ns); err != nil {
		return "", tokenError("issuer is not a valid name: " + err.Error())
	}
	return ns, nil
}

// checkSignature verifies t's signature with the keys of its algorithm
// (and key id).
func (v *JWTVerifier) checkSignature(ctx context.Context, t *token) error {
	alg := t.str("alg")
	method := jwt.GetSigningMethod(alg)
	if !v.allowed[alg] || method == nil {
		return tokenError("signature or algorithm is not accepted")
	}
	keys, err := v.keysFor(ctx, t, alg)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if method.Verify(t.signed, t.sig, k) == nil {
			return nil
		}
	}
	return tokenError("signature or algorithm is not accepted")
}

// keysFor lists the keys that may have signed t with alg.
func (v *JWTVerifier) keysFor(ctx context.Context, t *token, alg string) ([]any, error) {
	if kid, ok := t.header["kid"].(string); ok && v.jwks != nil {
		key, pinned, err := v.jwks.Key(ctx, kid)
		if err != nil {
			return nil, tokenError("signature or algorithm is not accepted")
		}
		// The key's own "alg", if any, pins it; its type must fit anyway.
		family, err := algorithmsFor(key)
		if err != nil || (pinned != "" && pinned != alg) || !slices.Contains(family, alg) {
			return nil, tokenError("signature or algorithm is not accepted")
		}
		return []any{key}, nil
	}
	if len(v.keys[alg]) == 0 {
		return nil, tokenError("signature or algorithm is not accepted")
	}
	return v.keys[alg], nil
}

func describeJWTError(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token is malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "signature or algorithm is not accepted"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signature or algorithm is not accepted"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return `token has no "exp" claim`
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "issuer is not accepted"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "audience is not accepted"
	}
	return "token claims are invalid"
}

// JWTIssuers verifies tokens from several issuers, each with its own keys,
// audience and claims, choosing by the token's "iss".
type JWTIssuers []*JWTVerifier

// Verify checks token against the verifier of its issuer, or the one
// verifier configured without an issuer. The token is read once: the
// "iss" it is routed by is the one its owner is named from.
func (is JWTIssuers) Verify(ctx context.Context, token string) (TokenIdentity, error) {
	t, err := readToken(token)
	if err != nil {
		return TokenIdentity{}, err
	}
	iss, err := t.issuer()
	if err != nil {
		return TokenIdentity{}, err
	}
	var fallback *JWTVerifier
	for _, v := range is {
		if v.issuer == "" && fallback == nil {
			fallback = v
		}
		if v.issuer != "" && v.issuer == iss {
			return v.verify(ctx, t)
		}
	}
	if fallback == nil {
		return TokenIdentity{}, tokenError("issuer is not accepted")
	}
	if err := is.checkUnclaimed(fallback, iss); err != nil {
		return TokenIdentity{}, err
	}
	return fallback.verify(ctx, t)
}

// checkUnclaimed refuses a token for the issuer-less block fallback whose
// owners would fall in a namespace that another source holds: a
// configured issuer's (named in any letter case), another block's, or
// the password users' or services'. The issuer-less block's keys are not
// the configured issuers' keys, so its tokens may not speak for their
// users, whatever the spelling of "iss".
func (is JWTIssuers) checkUnclaimed(fallback *JWTVerifier, iss string) error {
	if fallback.namespace != "" { // the operator named the block's own namespace
		return nil
	}
	ns := keystore.IssuerSource(iss)
	taken := func(held string) bool { return strings.EqualFold(ns, held) }
	if taken(keystore.SourcePassword) || taken(keystore.SourceService) {
		return tokenError("issuer is not accepted")
	}
	for _, v := range is {
		if v == fallback {
			continue
		}
		if strings.EqualFold(iss, v.issuer) || taken(v.namespace) {
			return tokenError("issuer is not accepted")
		}
	}
	return nil
}
