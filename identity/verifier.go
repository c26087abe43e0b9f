package identity

import (
	"context"
	"errors"
)

// Errors returned by Verifier.Authenticate. Their messages are safe to
// show to callers; other errors are faults of the user store.
var (
	// ErrBadCredentials means the password or token was not accepted.
	ErrBadCredentials = errors.New("invalid username or password")
	// ErrAPIKeyRefused means an API key was presented where it is not allowed.
	ErrAPIKeyRefused = errors.New("API keys cannot be used for this endpoint")
	// ErrOAuth2Disabled means a token arrived but no JWT keys are configured.
	ErrOAuth2Disabled = errors.New("OAuth2 tokens are not accepted: no JWT verification keys are configured")
)

// UserLookup returns the password hash of a user kept outside the
// configuration (in the key store), and false if there is none.
type UserLookup func(ctx context.Context, name string) (hash string, found bool, err error)

// Verifier authenticates the owner of a management request.
type Verifier struct {
	users    map[string]string // configured users: name -> hash
	lookup   UserLookup
	jwt      *JWTVerifier
	fakeHash string
}

// NewVerifier returns a Verifier over configured users (name -> bcrypt or
// argon2id hash, already normalised), users found by lookup (may be nil),
// and jwt (nil when OAuth2 is not configured).
func NewVerifier(users map[string]string, lookup UserLookup, jwt *JWTVerifier) *Verifier {
	v := &Verifier{users: users, lookup: lookup, jwt: jwt, fakeHash: fakeBcrypt}
	for _, h := range users {
		v.fakeHash = FakeHashLike(h)
		break
	}
	return v
}

// Authenticate returns the username that cred proves. API keys are refused
// before anything is looked up.
func (v *Verifier) Authenticate(ctx context.Context, cred Credential) (string, error) {
	switch cred.Kind {
	case KindAPIKey:
		return "", ErrAPIKeyRefused
	case KindOAuth2:
		if v.jwt == nil {
			return "", ErrOAuth2Disabled
		}
		return v.jwt.Verify(cred.Token)
	case KindPassword:
		return v.checkPassword(ctx, cred.Username, cred.Password)
	}
	return "", ErrBadCredentials
}

func (v *Verifier) checkPassword(ctx context.Context, name, password string) (string, error) {
	hash, found := v.users[name]
	if !found && v.lookup != nil {
		var err error
		if hash, found, err = v.lookup(ctx, name); err != nil {
			return "", err
		}
	}
	if !found {
		// Spend the same effort as for a real user, then refuse.
		_, _ = ComparePassword(v.fakeHash, password)
		return "", ErrBadCredentials
	}
	ok, err := ComparePassword(hash, password)
	if err != nil || !ok {
		return "", ErrBadCredentials
	}
	return name, nil
}
