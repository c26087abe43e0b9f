package keystore_test

import (
	"testing"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore/storetest"
)

// The store keystore's own tests run over keeps the contract too.
func TestMemStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store { return keystore.OpenTestStore(t) })
}
