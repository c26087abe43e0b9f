package wire

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Error is a refusal with the status and message the caller sees.
type Error struct {
	Status int
	Msg    string
	// RetryAfter, in seconds, says when to try again (429 and 503).
	RetryAfter int
}

func (e *Error) Error() string { return e.Msg }

// Fail is a refusal with status and message.
func Fail(status int, msg string) *Error { return &Error{Status: status, Msg: msg} }

// Unavailable answers a store fault, whose detail is the operator's, not
// the caller's. Its Retry-After is a second: nobody here knows when the
// store will answer again, and a retry costs the gateway no more than the
// request timeout it already waited.
var Unavailable = &Error{Status: http.StatusServiceUnavailable, Msg: "the key store is unavailable; try again later", RetryAfter: 1}

// KeyNotFound is the one answer for an unknown key id and for another
// owner's key, so that ids cannot be probed.
var KeyNotFound = Fail(http.StatusNotFound, "API key not found")

// During says what the refused request was doing, where that changes the
// answer.
type During struct {
	// Rotating: a scope refused in a rotation is 403 whatever the cause
	// (the caller did not ask for it), and grace periods count toward
	// the key cap.
	Rotating bool
	// MaxKeys is the per-owner key cap, for its message.
	MaxKeys int
}

// Refusal is the one table from what the key policy and the store refuse
// to the answer, for the API and the admin API alike. Errors it does not
// know (store faults) are returned as they are.
func Refusal(err error, d During) error {
	var re *keystore.RequestError
	var se *keystore.ScopeError
	var oe *keystore.OrphansError
	var ae *Error
	switch {
	case err == nil, errors.As(err, &ae):
		return err
	case errors.As(err, &re):
		return Fail(http.StatusBadRequest, re.Msg)
	case errors.As(err, &se) && se.Unknown && !d.Rotating:
		return Fail(http.StatusBadRequest, `"scopes": `+se.Error())
	case errors.As(err, &se) && se.Unknown:
		return Fail(http.StatusForbidden, fmt.Sprintf("the key has the scope %q, which is no longer allowed; it cannot be rotated", se.Scope))
	case errors.As(err, &se) && d.Rotating:
		return Fail(http.StatusForbidden, fmt.Sprintf("the key has the scope %q, which you may no longer give keys; it cannot be rotated", se.Scope))
	case errors.As(err, &se):
		return Fail(http.StatusForbidden, se.Error())
	case errors.As(err, &oe):
		return Fail(http.StatusConflict, oe.Error()+`: add the user with "orphaned_keys": "adopt" (caddy apikeys user add --adopt-keys) if it is the same person, or "revoke"`)
	case errors.Is(err, keystore.ErrBadName), errors.Is(err, keystore.ErrUnknownPlan), errors.Is(err, keystore.ErrNoCredits):
		return Fail(http.StatusBadRequest, err.Error())
	case errors.Is(err, keystore.ErrPolicyUnknown):
		return Fail(http.StatusBadRequest, "with --db, the key policy of the configuration is not known: add --config <file> so that it applies")
	case errors.Is(err, keystore.ErrLimit) && d.Rotating:
		return Fail(http.StatusConflict, fmt.Sprintf("key limit reached: an owner may hold at most %d keys, counting keys in a rotation's grace period; rotate without grace_seconds, or delete a key first", d.MaxKeys))
	case errors.Is(err, keystore.ErrLimit):
		return Fail(http.StatusConflict, fmt.Sprintf("key limit reached: an owner may hold at most %d keys; delete one first", d.MaxKeys))
	case errors.Is(err, keystore.ErrDisabled):
		return Fail(http.StatusForbidden, "the key is disabled; a disabled key cannot be rotated")
	case errors.Is(err, keystore.ErrLeaked):
		return Fail(http.StatusConflict, err.Error())
	case errors.Is(err, keystore.ErrExpired):
		return Fail(http.StatusConflict, "the key has expired; an expired key cannot be rotated")
	case errors.Is(err, keystore.ErrRotated):
		return Fail(http.StatusConflict, "the key was already rotated and is in its grace period; rotate the key that replaced it")
	case errors.Is(err, keystore.ErrConfigUser):
		return Fail(http.StatusConflict, "the user is declared in the config: manage it there (a stored user of the same name would be shadowed by it)")
	case errors.Is(err, keystore.ErrUnknownOwner):
		return Fail(http.StatusUnauthorized, "no such user")
	case errors.Is(err, keystore.ErrNotFound):
		return KeyNotFound
	}
	return err
}
