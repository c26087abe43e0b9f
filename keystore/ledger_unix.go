//go:build unix

package keystore

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

// mapFile maps the file at path, at least size bytes long, shared and
// writable, holding an exclusive lock on it until closed.
func mapFile(path string, size int) ([]byte, func() error, error) {
	// Caddy makes its data directory lazily: it may not exist yet.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil, errLedgerLocked
		}
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if info.Size() < int64(size) {
		if err := f.Truncate(int64(size)); err != nil {
			f.Close()
			return nil, nil, err
		}
	} else {
		size = int(info.Size())
	}
	if err := allocate(f, int64(size)); err != nil {
		f.Close()
		return nil, nil, err
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return mem, func() error {
		return errors.Join(syscall.Munmap(mem), f.Close())
	}, nil
}
