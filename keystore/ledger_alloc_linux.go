package keystore

import (
	"errors"
	"os"
	"syscall"
)

// allocate reserves the disk blocks of the file's first size bytes, so
// that a store to its mapping never needs room the disk no longer has
// (which would be a fault, killing the process, rather than an error).
// A filesystem that cannot reserve ahead is left to allocate on write.
func allocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return nil
	}
	return err
}
