package identity

import (
	"context"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// A Source proves who a caller is from credentials of one kind: the
// password users (Passwords), the trusted token issuers (Tokens), or a
// source of another program's. A new source is a type that implements it;
// the gateway's configuration names the sources it uses.
type Source interface {
	// Kind is the kind of credential the source checks.
	Kind() Kind
	// Authenticate returns who cred, of Kind, proves the caller at addr
	// (the client's address, for lockouts) to be. A refusal wraps
	// ErrBadCredentials, or is a *LockedOutError or ErrBusy; any other
	// error is a fault of the source.
	Authenticate(ctx context.Context, cred Credential, addr string) (Identity, error)
}

// Identity is who a credential proves the caller to be.
type Identity struct {
	// Owner is the password user, or the token's identity within its
	// issuer's namespace.
	Owner keystore.Owner
	// FromToken says the credential was an OAuth2 token; its Scopes,
	// narrowed to what the issuer may pass on, bound the scopes of the
	// keys it mints.
	FromToken bool
	Scopes    []string
	// MaxKeyLifetime caps the keys minted with the credential; 0: no cap
	// beyond the key policy's.
	MaxKeyLifetime time.Duration
}

// Actor is the identity acting on its own keys.
func (id Identity) Actor() keystore.Actor {
	return keystore.Actor{Owner: id.Owner, FromToken: id.FromToken, TokenScopes: id.Scopes, MaxLifetime: id.MaxKeyLifetime}
}

// Verifier authenticates the owner of a management request with the
// source of its credential's kind.
type Verifier struct {
	sources map[Kind]Source
}

// NewVerifier returns a Verifier over sources, at most one per kind of
// credential (a later one of a kind replaces an earlier).
func NewVerifier(sources ...Source) *Verifier {
	v := &Verifier{sources: make(map[Kind]Source, len(sources))}
	for _, s := range sources {
		v.sources[s.Kind()] = s
	}
	return v
}

// Authenticate returns who cred proves the caller to be; addr is the
// client's address, for lockouts. A credential no source checks (an API
// key among them) is refused before anything is looked up.
func (v *Verifier) Authenticate(ctx context.Context, cred Credential, addr string) (Identity, error) {
	s, ok := v.sources[cred.Kind]
	switch {
	case !ok && cred.Kind == KindOAuth2:
		return Identity{}, ErrOAuth2Disabled
	case !ok:
		return Identity{}, ErrBadCredentials
	}
	return s.Authenticate(ctx, cred, addr)
}
