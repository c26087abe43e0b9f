// Package etcdstore keeps API keys and users in etcd v3, so that several
// gateways share them. It implements keystore.Store and
// keystore.NoticeStore with the same semantics as the bbolt store
// (boltstore), keystore.Watchable, so that a Keyring's cache follows
// changes made by every gateway, JoinMembers, so that gateways know
// how many they are, and keystore.ShareTables, so that they divide busy
// rate limits by the load.
//
// Layout under the configured prefix P:
//
//	P keys/<hex digest>  → uvarint id length, id, key record (keystore.MarshalKey)
//	P ids/<id>           → hex digest
//	P owners/<owner (keystore.Owner.Encode)> 0x00 <created, 16 hex digits of Unix µs><id> → hex digest
//	P used/<hex digest>  → last use, 8 bytes big-endian Unix µs (absent or 0: never)
//	P users/<name>       → user record (keystore.MarshalUser)
//	P credits/<account>  → credit account (keystore.MarshalCreditAccount)
//	P notices/<endpoint>/<event id>      → pending notice (keystore.MarshalNotice)
//	P notices-done/<endpoint>/<event id> → done notice, kept until its KeepUntil
//	P members/<random id> → empty, under a lease: one live gateway (JoinMembers)
//	P shares/<table id>   → how the gateways divide one busy rate limit (keystore.MarshalShareTable)
//
// Last-used times live apart from the records so that writing them neither
// rewrites a record nor wakes the watches that guard every gateway's cache.
package etcdstore

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Defaults for Options fields left zero.
const (
	DefaultPrefix         = "/caddy-apikeys/"
	DefaultRequestTimeout = 3 * time.Second
	DefaultSyncInterval   = 500 * time.Millisecond
)

// maxTxnOps stays under etcd's default limit of operations per
// transaction (--max-txn-ops 128).
const maxTxnOps = 120

// Options tune a Store.
type Options struct {
	// Prefix under which every record lives; several deployments may share
	// a cluster under different prefixes. Default DefaultPrefix.
	Prefix string
	// RequestTimeout bounds every etcd request, so that an unreachable
	// cluster turns into an error instead of a hang. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// SyncInterval is how often a watch confirms that it has every change,
	// which keeps a Keyring trusting its cache. Default DefaultSyncInterval.
	SyncInterval time.Duration
	// Logger is told when the watch breaks, resumes or starts afresh.
	// Default: no logging.
	Logger *zap.Logger
}

// Store is a keystore.Store on etcd.
type Store struct {
	cli        *clientv3.Client
	ownsClient bool
	prefix     string
	timeout    time.Duration
	syncEvery  time.Duration
	logger     *zap.Logger
	// rev, if set, is the revision listings read at (a snapshot's).
	rev int64
	// minter commits key creations in groups (commit.go).
	minter *minter
}

// New returns a Store that uses cli, which the caller keeps and closes.
func New(cli *clientv3.Client, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Store{cli: cli, prefix: opts.Prefix, timeout: opts.RequestTimeout, syncEvery: opts.SyncInterval, logger: opts.Logger, minter: newMinter()}
}

// Connections to members, unless the caller's clientv3.Config says
// otherwise: a connection that hears nothing for keepAliveTime (gRPC's
// least) is pinged and dropped if the ping goes unanswered within the
// request timeout, and a member is dialled again at most maxRedialDelay
// after a failed try, each try having DialTimeout. gRPC's defaults (no
// pings, retries backing off to 2 minutes, 20 s per try) let a gateway
// whose connections a network cut left dead keep them after the network
// healed, or wait minutes to dial again (TestGatewayCutOffFromEtcd).
const (
	keepAliveTime  = 10 * time.Second
	maxRedialDelay = time.Second
)

// Open connects to the cluster described by cfg and checks within
// cfg.DialTimeout (default 5s) that it answers, so that a wrong endpoint
// or credential fails at startup with a clear error. Unless cfg sets its
// own, connections are kept alive and dialled again as the constants
// above say. Close closes the client.
func Open(cfg clientv3.Config, opts Options) (*Store, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.DialKeepAliveTime <= 0 {
		cfg.DialKeepAliveTime = keepAliveTime
		cfg.DialKeepAliveTimeout = cmp.Or(opts.RequestTimeout, DefaultRequestTimeout)
	}
	// Before the caller's options, which may override it.
	cfg.DialOptions = append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxRedialDelay},
		MinConnectTimeout: cfg.DialTimeout,
	})}, cfg.DialOptions...)
	cli, err := clientv3.New(cfg) // signs in, if a username is set
	if err != nil {
		return nil, explainOpen(err, cfg, cmp.Or(opts.Prefix, DefaultPrefix))
	}
	s := New(cli, opts)
	s.ownsClient = true
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(ctx, s.prefix+"users/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		_ = cli.Close()
		return nil, explainOpen(err, cfg, s.prefix)
	}
	return s, nil
}

// explainOpen says what an operator should check when Open fails.
func explainOpen(err error, cfg clientv3.Config, prefix string) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("etcd at %v did not answer within %v: check that the endpoints are up, and that their scheme (http/https) and the TLS settings match the cluster's: %w",
			cfg.Endpoints, cfg.DialTimeout, err)
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("etcd at %v refused the username or password: %w", cfg.Endpoints, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return fmt.Errorf("etcd at %v refused access under %q: grant the user read-write on that prefix: %w", cfg.Endpoints, prefix, err)
	}
	return fmt.Errorf("etcd at %v: %w", cfg.Endpoints, err)
}

// Client returns the etcd client the store uses.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Close answers the key creations still waiting, and closes the client if
// Open created it.
func (s *Store) Close() error {
	s.minter.close()
	if s.ownsClient {
		return s.cli.Close()
	}
	return nil
}

// withTimeout bounds one store operation.
func (s *Store) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// fault marks an etcd error as a storage fault of this backend.
func fault(err error) error {
	if err == nil || errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrExists) || errors.Is(err, keystore.ErrLimit) {
		return err
	}
	return fmt.Errorf("etcd: %w", err)
}

func (s *Store) keyPath(hexHash string) string { return s.prefix + "keys/" + hexHash }
func (s *Store) idPath(id string) string       { return s.prefix + "ids/" + id }
func (s *Store) usedPath(hexHash string) string {
	return s.prefix + "used/" + hexHash
}
func (s *Store) userPath(name string) string { return s.prefix + "users/" + name }
func (s *Store) ownerPrefix(owner keystore.Owner) string {
	return s.prefix + "owners/" + owner.Encode() + "\x00"
}

func (s *Store) ownerPath(k keystore.Key) string {
	return fmt.Sprintf("%s%016x%s", s.ownerPrefix(k.Owner), uint64(keystore.UnixMicros(k.Created)), k.ID)
}

func hexOf(h keystore.Hash) string { return hex.EncodeToString(h[:]) }

func encodeUsed(t time.Time) string {
	return string(binary.BigEndian.AppendUint64(nil, uint64(keystore.UnixMicros(t))))
}

func decodeUsed(b []byte) time.Time {
	if len(b) != 8 {
		return time.Time{}
	}
	return keystore.FromUnixMicros(int64(binary.BigEndian.Uint64(b)))
}

// encodeRecord prefixes the key record with the id, which names the
// record in bbolt but not here.
func encodeRecord(k keystore.Key) string {
	k.LastUsed = time.Time{} // kept under used/
	b := binary.AppendUvarint(nil, uint64(len(k.ID)))
	b = append(b, k.ID...)
	return string(append(b, keystore.MarshalKey(k)...))
}

func decodeRecord(b []byte) (keystore.Key, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return keystore.Key{}, errors.New("etcd: corrupt key record")
	}
	id := string(b[w : w+int(n)])
	return keystore.UnmarshalKey(id, b[w+int(n):])
}

// Interface guards
var (
	_ keystore.Store     = (*Store)(nil)
	_ keystore.Watchable = (*Store)(nil)
)
