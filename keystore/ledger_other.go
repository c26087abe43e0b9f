//go:build !unix

package keystore

import "errors"

// mapFile is not available here: the ledger stays in memory, and a crash
// writes off the blocks held (under-spending, never over-spending).
func mapFile(string, int) ([]byte, func() error, error) {
	return nil, nil, errors.New("memory-mapped credit ledgers need a Unix system")
}
