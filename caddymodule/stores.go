package caddymodule

import (
	"context"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// The contract of store modules: what a module in the apikeys.stores
// namespace implements, and what the stores it opens may implement, for
// the app to use them. The bolt and etcd modules are two; a module from
// another project that implements the same interfaces is used the same
// way.

// StoreOpener is implemented by modules in the apikeys.stores namespace.
// Open returns a store and a release function that the app calls exactly
// once, after its last use of the store. The app opens a store more than
// once (for itself, its Meter and its membership, across config reloads):
// each Open must return the same store or another handle on its records.
type StoreOpener interface {
	Open() (store keystore.Store, release func() error, err error)
}

// CreditLedger is implemented by store modules whose stores can keep
// credits: without it, a configuration with plans is refused. LedgerPath
// names the file where this process keeps the credit blocks it holds
// from the store (keystore.MeterOptions.Ledger), so that a process
// killed with blocks in hand gives them back when it starts again. It
// must be the same for every configuration of the same store and differ
// between stores: the app also keys its Meter and its membership by it,
// to keep them across config reloads.
type CreditLedger interface {
	LedgerPath() (string, error)
}

// StaleBounder is implemented by store modules whose stores other
// gateways write too: how long a gateway may trust its cache of the
// store without word from it (keystore.Options.MaxStale).
type StaleBounder interface {
	StaleBound() time.Duration
}

// Membership is implemented by stores (what StoreOpener.Open returns)
// that several gateways share. JoinMembers counts this process among
// the live gateways until ctx ends, saying whether it divides rate limits
// by the load, and calls report with this process's id and theirs
// whenever they change: gateways divide rate limits and lockout
// thresholds among themselves. The module must also be a CreditLedger,
// whose path names the membership.
type Membership interface {
	JoinMembers(ctx context.Context, followsLoad bool, report func(keystore.Members))
}

// LoadFollower is implemented by store modules whose gateways can divide
// rate limits by the load (keystore.Meter.FollowLoad) when the store is
// a keystore.ShareTables.
type LoadFollower interface {
	SharesFollowLoad() bool
}
