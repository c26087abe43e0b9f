//go:build !linux

package boltstore

// limitMemory leaves the checking process's memory as it is where there
// is no address-space limit to set.
func limitMemory(int64) {}
