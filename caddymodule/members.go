package caddymodule

import (
	"context"
	"errors"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// membersPool keeps this process's membership among the gateways sharing
// a store, one per store, across config reloads. It is keyed like
// meterPool by the ledger path, which names the store.
var membersPool = caddy.NewUsagePool()

// sharedStore reports whether other gateways may use store too.
func sharedStore(store keystore.Store) bool {
	_, ok := store.(Membership)
	return ok
}

// members is a Membership joined once and heard by several listeners:
// the Meter (rate limits) and each config's lockout divide their limits
// among the same gateways. Keeping it costs one lease kept alive, not a
// store write per request.
type members struct {
	release func() error       // the store handle it joined with
	leave   context.CancelFunc // ends JoinMembers
	left    chan struct{}      // closed once JoinMembers has returned

	mu        sync.Mutex
	last      keystore.Members // the last report; no IDs before the first
	listeners map[int]func(keystore.Members)
	next      int
}

// report hands a change of membership to every listener.
func (m *members) report(ms keystore.Members) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = ms
	for _, fn := range m.listeners {
		fn(ms)
	}
}

// listen hands fn the last report at once, if there was one, and every
// later one, until stop is called; fn is not called after stop returns.
func (m *members) listen(fn func(keystore.Members)) (stop func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := m.next
	m.next++
	m.listeners[id] = fn
	if m.last.Count() > 0 {
		fn(m.last)
	}
	return func() {
		m.mu.Lock()
		delete(m.listeners, id)
		m.mu.Unlock()
	}
}

// Destruct leaves the membership, revoking its lease so that the other
// gateways count this one out at once, and lets go of the store.
func (m *members) Destruct() error {
	m.leave()
	<-m.left
	return m.release()
}

// joinMembers returns this process's membership among the gateways
// sharing the app's store, joining on first use, and its release.
func (a *App) joinMembers() (*members, func() error, error) {
	loc, ok := a.store.(CreditLedger)
	if !ok {
		return nil, nil, errors.New("this store module cannot name its store")
	}
	path, err := loc.LedgerPath()
	if err != nil {
		return nil, nil, err
	}
	val, _, err := membersPool.LoadOrNew(path, func() (caddy.Destructor, error) {
		store, release, err := a.store.Open()
		if err != nil {
			return nil, err
		}
		ms, ok := store.(Membership)
		if !ok {
			_ = release()
			return nil, errors.New("this store is not shared by gateways")
		}
		follows := a.followsLoadOn(store)
		ctx, leave := context.WithCancel(context.Background())
		m := &members{release: release, leave: leave, left: make(chan struct{}), listeners: make(map[int]func(keystore.Members))}
		go func() {
			defer close(m.left)
			ms.JoinMembers(ctx, follows, m.report)
		}()
		return m, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return val.(*members), func() error {
		_, err := membersPool.Delete(path)
		return err
	}, nil
}
