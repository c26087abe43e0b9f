package caddymodule_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/caddymodule"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// ledgerTestStore is a store module as another project would write one,
// with only the exported contract of store modules: it keeps its records
// in a bbolt file, one handle per file, and its credit ledger beside it.
type ledgerTestStore struct {
	Path string `json:"path,omitempty"`
}

func init() { caddy.RegisterModule(ledgerTestStore{}) }

func (ledgerTestStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apikeys.stores.ledger_test",
		New: func() caddy.Module { return new(ledgerTestStore) },
	}
}

var ledgerTestPool = caddy.NewUsagePool()

type ledgerTestHandle struct{ *boltstore.Store }

func (h ledgerTestHandle) Destruct() error { return h.Close() }

func (s *ledgerTestStore) Open() (keystore.Store, func() error, error) {
	val, _, err := ledgerTestPool.LoadOrNew(s.Path, func() (caddy.Destructor, error) {
		st, err := boltstore.Open(s.Path, time.Second)
		return ledgerTestHandle{st}, err
	})
	if err != nil {
		return nil, nil, err
	}
	return val.(ledgerTestHandle).Store, func() error {
		_, err := ledgerTestPool.Delete(s.Path)
		return err
	}, nil
}

func (s *ledgerTestStore) LedgerPath() (string, error) { return s.Path + ".ledger", nil }

var (
	_ caddymodule.StoreOpener  = (*ledgerTestStore)(nil)
	_ caddymodule.CreditLedger = (*ledgerTestStore)(nil)
)

// A store module of another package keeps credits through the exported
// contract: a key's credits are spent, and stay spent across a restart.
func TestStoreModuleOfAnotherPackageKeepsCredits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	config := fmt.Sprintf(`{"store": {"backend": "ledger_test", "path": %q}, "default_plan": "p", "plans": {"p": {"credits": {"amount": 3}}}}`, path)
	app, stop := caddymodule.StartApp(t, config)
	secret := caddymodule.MintForTest(t, app, "svc")
	for i := range 3 {
		if !caddymodule.AuthenticateForTest(t, app, secret) {
			t.Fatalf("request %d of 3 credits refused", i+1)
		}
	}
	if caddymodule.AuthenticateForTest(t, app, secret) {
		t.Fatal("a 4th request on 3 credits admitted")
	}
	stop()
	app, stop = caddymodule.StartApp(t, config)
	defer stop()
	if caddymodule.AuthenticateForTest(t, app, secret) {
		t.Fatal("after a restart, a request on 3 spent credits admitted")
	}
}
