package keystore

import (
	"context"
	"errors"
)

// ErrOverBudget is returned by VerifyWithin for a key that would need a
// store read its caller's budget does not allow.
var ErrOverBudget = errors.New("API key not known, and the budget for looking up unknown keys is spent")

// VerifyWithin is Verify for callers that bound how many unknown keys may
// reach the store: when the presented key is not known to exist (not
// cached, or cached as unknown while the cache cannot be trusted), it is
// read from the store only if mayRead says so, and refused with
// ErrOverBudget otherwise, without a store read. Keys known to exist never
// consult mayRead. Since key checksums are public, anyone can make
// endless well-formed keys; this keeps them from loading the store.
func (kr *Keyring) VerifyWithin(ctx context.Context, presented string, mayRead func() bool) (*Key, error) {
	return kr.verify(ctx, presented, mayRead)
}
