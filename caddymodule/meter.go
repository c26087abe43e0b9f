package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// meterPool keeps one Meter per store across config reloads, so that rate
// windows and credit blocks are not reset by a reload. It is keyed by the
// ledger file, which names the store.
var meterPool = caddy.NewUsagePool()

// meterHandle is a pooled Meter with the store handle it holds.
type meterHandle struct {
	meter   *keystore.Meter
	store   keystore.Store
	release func() error
	// leave stops hearing the store's membership and lets go of it; nil
	// for a store of this process alone.
	leave func() error
}

// Destruct gives back the credit blocks held, and lets go of the store.
func (h meterHandle) Destruct() error {
	var err error
	if h.leave != nil {
		err = h.leave()
	}
	return errors.Join(err, h.meter.Close(), h.release())
}

// openMeter returns the Meter of the app's store, making it on first use,
// and its release.
func (a *App) openMeter() (*keystore.Meter, func() error, error) {
	loc, ok := a.store.(CreditLedger)
	if !ok {
		return nil, nil, errors.New("this store module cannot keep credits")
	}
	path, err := loc.LedgerPath()
	if err != nil {
		return nil, nil, err
	}
	logger := a.logger
	val, loaded, err := meterPool.LoadOrNew(path, func() (caddy.Destructor, error) {
		store, release, err := a.store.Open()
		if err != nil {
			return nil, err
		}
		opts := keystore.MeterOptions{Ledger: path, OnError: func(err error) {
			logger.Warn("keeping limits in the store", zap.Error(err))
		}}
		m, err := keystore.NewMeter(store, opts)
		if err != nil {
			// Another process on this data directory holds the ledger:
			// keep blocks in memory (a crash then writes them off).
			logger.Warn("credit ledger unavailable; credit blocks are kept in memory only", zap.Error(err))
			opts.Ledger = ""
			if m, err = keystore.NewMeter(store, opts); err != nil {
				_ = release()
				return nil, err
			}
		}
		h := meterHandle{meter: m, store: store, release: release}
		if sharedStore(store) {
			ms, releaseMembers, err := a.joinMembers()
			if err != nil {
				return nil, errors.Join(err, m.Close(), release())
			}
			if a.followsLoadOn(store) {
				m.FollowLoad(context.Background(), store.(keystore.ShareTables))
			}
			stop := ms.listen(m.SetMembers)
			h.leave = func() error {
				stop()
				return releaseMembers()
			}
		}
		return h, nil
	})
	if err != nil {
		return nil, nil, err
	}
	if h := val.(meterHandle); loaded && sharedStore(h.store) && h.meter.FollowsLoad() != a.followsLoadOn(h.store) {
		// The meter, and how it divides rates, outlives reloads:
		// switching mid-run could let a gateway enforce more than the
		// tables grant it.
		logger.Warn("rate_shares changed: it takes effect when the gateway restarts", zap.Bool("follow_load_now", h.meter.FollowsLoad()))
	}
	return val.(meterHandle).meter, func() error {
		_, err := meterPool.Delete(path)
		return err
	}, nil
}

// followsLoadOn reports whether the gateways' rate limits follow the load
// on store: it keeps share tables, and the store module does not say
// rate_shares equal. The meter (FollowLoad) and the membership record
// (what the other gateways count this one as) both ask here.
func (a *App) followsLoadOn(store keystore.Store) bool {
	if _, ok := store.(keystore.ShareTables); !ok {
		return false
	}
	f, ok := a.store.(LoadFollower)
	return !ok || f.SharesFollowLoad()
}

// LedgerPath is next to the database file.
func (b *BoltStore) LedgerPath() (string, error) {
	p, err := b.resolvedPath()
	return p + ".credits", err
}

// LedgerPath is in Caddy's data directory, named after the cluster and
// prefix.
func (e *EtcdStore) LedgerPath() (string, error) {
	repl := caddy.NewReplacer()
	var eps []string
	for _, ep := range e.Endpoints {
		eps = append(eps, repl.ReplaceKnown(ep, ""))
	}
	slices.Sort(eps)
	sum := sha256.Sum256([]byte(strings.Join(eps, " ") + "\x00" + e.Prefix))
	return filepath.Join(caddy.AppDataDir(), "apikeys-credits-"+hex.EncodeToString(sum[:8])+".ledger"), nil
}
