package keystore

import "testing"

// OpenTestStore is openTestStore, for conformance_test.go.
func OpenTestStore(t testing.TB) Store { return openTestStore(t) }
