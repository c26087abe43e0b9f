package identity

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by Verifier.Authenticate and its sources. Their
// messages are safe to show to callers; other errors are faults of a
// source (its user store).
var (
	// ErrBadCredentials means the password or token was not accepted.
	ErrBadCredentials = errors.New("invalid username or password")
	// ErrOAuth2Disabled means a token arrived but no JWT keys are configured.
	ErrOAuth2Disabled = errors.New("OAuth2 tokens are not accepted: no JWT verification keys are configured")
	// ErrBusy means too many password checks are waiting already.
	ErrBusy = errors.New("the server is busy checking passwords; try again shortly")
)

// LockedOutError refuses a password attempt during a lockout.
type LockedOutError struct {
	// RetryAfter is how long until attempts are accepted again.
	RetryAfter time.Duration
}

func (e *LockedOutError) Error() string {
	return fmt.Sprintf("too many failed sign-in attempts; try again in %d seconds", retrySeconds(e.RetryAfter))
}

// RetryAfterSeconds is the lockout rounded up to whole seconds.
func (e *LockedOutError) RetryAfterSeconds() int { return retrySeconds(e.RetryAfter) }

func retrySeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
