package keystore

import (
	"context"
	"errors"
	"syscall"
)

// Every sentinel error of the package, each with its meaning. Callers
// match them with errors.Is: most are wrapped with details. Errors of
// stores other than these are storage faults.

// Errors a Store returns (see Store for which method returns which).
var (
	// ErrNotFound means no key, user, credit account or notice matched.
	ErrNotFound = errors.New("not found")
	// ErrExists means a key id or digest, or a username, is already taken.
	ErrExists = errors.New("already exists")
	// ErrLimit means the owner already holds the maximum number of keys.
	ErrLimit = errors.New("key limit reached")
	// ErrNoticeBusy is returned by a function given to
	// NoticeStore.UpdateNotice to leave the notice as it is.
	ErrNoticeBusy = errors.New("notice is leased or done")
)

// Errors of presented keys: Keyring.VerifyWithin refuses a key that is
// not one with ErrMalformedKey, a key that exists with ErrExpired,
// ErrDisabled or ErrOrphaned, and an unknown key with ErrNotFound (or
// ErrOverBudget).
var (
	// ErrMalformedKey means the text is not a well-formed key with a valid
	// checksum (ParseKey); no store was read.
	ErrMalformedKey = errors.New("malformed API key")
	// ErrExpired means the key's lifetime, or a rotation's grace period,
	// is over.
	ErrExpired = errors.New("API key has expired")
	// ErrDisabled means the key is disabled; a disabled key cannot be
	// rotated either.
	ErrDisabled = errors.New("API key is disabled")
	// ErrOrphaned means the key's owner, a password user, no longer
	// exists.
	ErrOrphaned = errors.New("API key's owner no longer exists")
	// ErrOverBudget is returned by VerifyWithin for a key that would need a
	// store read its caller's budget does not allow.
	ErrOverBudget = errors.New("API key not known, and the budget for looking up unknown keys is spent")
)

// Errors of managing keys and users. RequestError and ScopeError
// messages are safe to show, as are ErrBadName's.
var (
	// ErrLeaked refuses to enable a key reported leaked: it stays
	// disabled for good (so rotating it fails with ErrDisabled).
	ErrLeaked = errors.New("the API key was reported leaked: it stays disabled; mint a new one")
	// ErrRotated means the key was already rotated and is in its grace
	// period: rotate its successor instead.
	ErrRotated = errors.New("API key was already rotated; rotate its successor instead")
	// ErrUnknownOwner means the password user a key would belong to does
	// not exist (any more).
	ErrUnknownOwner = errors.New("no such user")
	// ErrBadName is wrapped by CheckName's errors, whose messages are safe
	// to show to callers.
	ErrBadName = errors.New("invalid name")
	// ErrConfigUser refuses to store a user that the configuration
	// declares: the configuration would shadow it, and removing the user
	// there would leave the stored one.
	ErrConfigUser = errors.New("the user is declared in the configuration")
	// ErrUnknownPlan means a plan name that the configuration does not
	// define.
	ErrUnknownPlan = errors.New("no such plan")
	// ErrNoCredits means a key's plan has no credits to set or add to.
	ErrNoCredits = errors.New("the key's plan has no credits")
	// ErrPolicyUnknown refuses what needs the configuration, in a tool
	// that works on a store file without it.
	ErrPolicyUnknown = errors.New("the key policy is not known here: give the configuration (--config) so that it applies")
)

// Errors the package keeps to itself.
var (
	// errCorruptRecord means a stored record does not decode.
	errCorruptRecord = errors.New("corrupt key record")
	// errLedgerLocked means another process uses the ledger file.
	errLedgerLocked = errors.New("the credit ledger is in use by another process")
	// errCreditsVoid means a credit block belongs to an older period or
	// generation than the account's: it is not given back.
	errCreditsVoid = errors.New("credit block is void")
	// errUnchanged leaves a key as it is from within UpdateKey.
	errUnchanged = errors.New("unchanged")
)

// refusals are the errors above: answers about the request, not faults.
var refusals = []error{ErrNotFound, ErrExists, ErrLimit, ErrNoticeBusy, ErrMalformedKey, ErrExpired,
	ErrDisabled, ErrOrphaned, ErrOverBudget, ErrLeaked, ErrRotated, ErrUnknownOwner, ErrBadName,
	ErrConfigUser, ErrUnknownPlan, ErrNoCredits, ErrPolicyUnknown}

// FaultReason says why a store operation failed, for logs and metrics,
// when the failure is a storage fault: "disk_full" when the disk, a
// quota or a file size limit refused a write (the store keeps working,
// and writes succeed again once there is room), "timeout" when the store
// did not answer in time, "store" otherwise. It is "" for no fault: nil,
// the errors above, a refused request, or a caller that left.
func FaultReason(err error) string {
	var req *RequestError
	var scope *ScopeError
	var orphans *OrphansError
	switch {
	case err == nil, errors.Is(err, context.Canceled),
		errors.As(err, &req), errors.As(err, &scope), errors.As(err, &orphans):
		return ""
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return "disk_full"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	for _, r := range refusals {
		if errors.Is(err, r) {
			return ""
		}
	}
	return "store"
}
