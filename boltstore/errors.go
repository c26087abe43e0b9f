package boltstore

import "errors"

// Errors of the bbolt store itself; it also returns keystore's store
// errors (keystore.ErrNotFound, keystore.ErrExists, …) as keystore.Store
// says.
var (
	// ErrLocked means another process holds the database file.
	ErrLocked = errors.New("database file is locked by another process")
	// ErrClosed is returned by operations on a closed store.
	ErrClosed = errors.New("key store is closed")
	// ErrDamaged matches every *DamagedError: the file is not a sound
	// store or backup.
	ErrDamaged = errors.New("damaged store file")
)
