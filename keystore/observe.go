package keystore

import "time"

// StoreObserver is told of every store operation a Keyring makes: its
// name in snake case (e.g. "key_by_hash"), how long it took, and its
// error. It must be safe for concurrent use.
type StoreObserver func(op string, took time.Duration, err error)

// observe runs f, the store operation op, and tells the Keyring's
// observer about it.
func observe[T any](kr *Keyring, op string, f func() (T, error)) (T, error) {
	if kr.observer == nil {
		return f()
	}
	start := time.Now()
	v, err := f()
	kr.observer(op, time.Since(start), err)
	return v, err
}

// observeErr is observe for operations that return only an error.
func observeErr(kr *Keyring, op string, f func() error) error {
	_, err := observe(kr, op, func() (struct{}, error) { return struct{}{}, f() })
	return err
}
