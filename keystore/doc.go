// Package keystore mints, stores and verifies API keys. It holds the key
// format, owners and the key Policy (who may hold and grant what), the
// Keyring that puts an in-memory cache and last-used coalescing in front
// of a Store, and the Meter that holds keys to their plans' rate limits
// and credits. It has no dependency on Caddy, and keeps no records
// itself: backends implement its Store interface (boltstore, a bbolt
// file; etcdstore, a cluster), and the suite in keystore/storetest checks
// that they keep its contract (contract.go).
package keystore
