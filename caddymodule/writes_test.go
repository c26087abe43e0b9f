package caddymodule

import (
	"context"
	"net/http/httptest"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
)

// TestValidationWritesOnlyFlushes shows with bbolt's own counters that
// validating keys writes nothing: only the periodic last_used flush does,
// in one transaction.
func TestValidationWritesOnlyFlushes(t *testing.T) {
	g, app, key := testGate(t, &APIKeyGate{})
	db := app.keyring.Store().(*boltstore.Store).DB()
	txid := func() int {
		var id int
		_ = db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	validate := func() {
		r := httptest.NewRequest("GET", "/v1/", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		if a := serveGate(g, r); !a.admitted() {
			t.Fatal(a.status, a.err)
		}
	}
	validate() // first use reads the store and caches the key

	const n = 10_000
	before, reads := txid(), db.Stats().TxN
	for range n {
		validate()
	}
	afterBurst := txid()
	readTxs := db.Stats().TxN - reads - 1 // minus txid()'s own
	if afterBurst != before {
		t.Fatalf("%d validations committed %d write transactions, want 0", n, afterBurst-before)
	}
	if readTxs != 0 {
		t.Fatalf("%d validations opened %d read transactions, want 0 (cached)", n, readTxs)
	}
	if err := app.keyring.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	flushes := txid() - afterBurst
	if flushes != 1 {
		t.Fatalf("flush committed %d transactions, want 1", flushes)
	}
	t.Logf("bbolt write transactions: 0 for %d validated requests (read transactions: %d); %d for the last_used flush that followed", n, readTxs, flushes)
}
