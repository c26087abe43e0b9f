package keystore

import "context"

// A ReadBudget decides whether a key that the Keyring does not know to
// exist, presented by client, may be read from the store. It is asked
// before the read and, if it allows it, told after the read whether the
// key exists, so that it can count only the keys that did not (a budget
// counts the read as spent while it is in flight, and refunds it if the
// key exists). A budget is a function made once, not per request, so that
// a cached key costs no allocation.
type ReadBudget func(client string) (settle func(exists bool), ok bool)

// VerifyWithin is Verify for callers that bound how many unknown keys
// each client may make reach the store: when the presented key is not
// known to exist (not
// cached, or cached as unknown while the cache cannot be trusted), it is
// read from the store only if budget allows, and refused with
// ErrOverBudget otherwise, without a store read. Keys known to exist never
// consult the budget. Since key checksums are public, anyone can make
// endless well-formed keys; this keeps them from loading the store.
func (kr *Keyring) VerifyWithin(ctx context.Context, presented string, budget ReadBudget, client string) (*Key, error) {
	return kr.verify(ctx, presented, budget, client)
}
