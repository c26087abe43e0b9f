package identity

import (
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
	"time"

	"github.com/golang-jwt/jwt/v5"
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
	// Audiences, if set, must contain one of the "aud" values.
	Audiences []string
	// IdentityClaim holds the username. Default DefaultIdentityClaim.
	IdentityClaim string
	// Leeway for time claims. Default DefaultLeeway.
	Leeway time.Duration
	// Now returns the current time; tests may replace it.
	Now func() time.Time
}

// JWTVerifier checks OAuth2 JWTs and extracts the username.
type JWTVerifier struct {
	keys     map[string][]any // algorithm -> candidate keys
	parser   *jwt.Parser
	claim    string
	audience []string
}

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
	if len(keys) == 0 {
		return nil, errors.New("no HMAC secret or public key configured")
	}
	if len(cfg.Algorithms) > 0 {
		narrowed := make(map[string][]any)
		for _, alg := range cfg.Algorithms {
			if keys[alg] == nil {
				return nil, fmt.Errorf("algorithm %q has no configured key of its family", alg)
			}
			narrowed[alg] = keys[alg]
		}
		keys = narrowed
	}
	methods := make([]string, 0, len(keys))
	for alg := range keys {
		methods = append(methods, alg)
	}
	slices.Sort(methods)

	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	claim := cfg.IdentityClaim
	if claim == "" {
		claim = DefaultIdentityClaim
	}
	return &JWTVerifier{keys: keys, parser: jwt.NewParser(opts...), claim: claim, audience: cfg.Audiences}, nil
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

// Verify checks the token's signature and claims and returns the username.
func (v *JWTVerifier) Verify(token string) (string, error) {
	if len(token) > MaxTokenLen {
		return "", tokenError("token is too long")
	}
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(token, claims, v.keyFor)
	if err != nil {
		return "", tokenError(describeJWTError(err))
	}
	if len(v.audience) > 0 {
		auds, err := claims.GetAudience()
		if err != nil || !slices.ContainsFunc(auds, func(a string) bool { return slices.Contains(v.audience, a) }) {
			return "", tokenError("audience is not accepted")
		}
	}
	user, _ := claims[v.claim].(string)
	if user == "" {
		return "", tokenError(fmt.Sprintf("claim %q with the username is missing", v.claim))
	}
	return user, nil
}

func (v *JWTVerifier) keyFor(t *jwt.Token) (any, error) {
	alg, _ := t.Header["alg"].(string)
	keys := v.keys[alg]
	if len(keys) == 0 {
		return nil, jwt.ErrTokenUnverifiable
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k
	}
	return set, nil
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
