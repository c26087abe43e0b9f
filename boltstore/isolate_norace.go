//go:build !race

package boltstore

// childEnv is what the checking process gets in its environment beyond
// this one's: nothing.
func childEnv() []string { return nil }
