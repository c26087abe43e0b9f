package keystore

import (
	"slices"
	"sync"
	"sync/atomic"
)

// A Memo is a value that a caller derives from a verified key, built once
// per cached key and shared by every request that presents it: what a
// caller makes of a key on every request (the placeholders a gateway
// sets, say) then costs nothing per request. Make each Memo once, with
// NewMemo, as a package-level variable: a Keyring builds the value of
// every Memo made so far when it caches a key.
type Memo[T any] struct {
	index int
	build func(*Key) T
}

var (
	memosMu sync.Mutex // serializes NewMemo
	// memoBuilders builds the value of every Memo, by index; replaced,
	// never changed, so that a Keyring reads it without the lock.
	memoBuilders atomic.Pointer[[]func(*Key) any]
)

// NewMemo returns a Memo whose value for a key is build(key). build must
// derive it only from the key's fields, which a Keyring never changes in
// a cached key, and must not keep the key. A pointer T costs least to
// read: Of then copies one word.
func NewMemo[T any](build func(k *Key) T) *Memo[T] {
	memosMu.Lock()
	defer memosMu.Unlock()
	var builders []func(*Key) any
	if p := memoBuilders.Load(); p != nil {
		builders = *p
	}
	m := &Memo[T]{index: len(builders), build: build}
	builders = append(slices.Clip(builders), func(k *Key) any { return build(k) })
	memoBuilders.Store(&builders)
	return m
}

// Of returns m's value for k: for a key the Keyring returned from its
// cache, the one built when it was cached; for any other (a key read from
// a Store, a listing's, one cached before m was made), a new one each
// time.
func (m *Memo[T]) Of(k *Key) T {
	if m.index < len(k.memos) {
		if v, ok := k.memos[m.index].(T); ok {
			return v
		}
	}
	return m.build(k)
}

// buildMemos returns the value of every Memo for k.
func buildMemos(k *Key) []any {
	p := memoBuilders.Load()
	if p == nil {
		return nil
	}
	memos := make([]any, len(*p))
	for i, build := range *p {
		memos[i] = build(k)
	}
	return memos
}
