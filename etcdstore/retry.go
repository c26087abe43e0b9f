package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// transient reports whether err is one etcd returns while members come and
// go (no leader, leader changed, member stopping, connection lost): the
// request can be tried again, on this member or another. A write that
// failed so may still have been applied, which callers must allow for.
func transient(err error) bool {
	if errors.Is(err, errTryTimedOut) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}

// backoff waits before try number n (from 1) of a request that failed
// transiently, and reports false once ctx ends.
func backoff(ctx context.Context, n int) bool {
	d := min(10*time.Millisecond<<n, 200*time.Millisecond)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// retry runs a read until it succeeds, fails for good, or ctx ends.
func retry[T any](ctx context.Context, read func() (T, error)) (T, error) {
	for n := 1; ; n++ {
		v, err := read()
		if err == nil || !transient(err) || !backoff(ctx, n) {
			return v, err
		}
	}
}

// errTryTimedOut marks a try abandoned after its share of the request
// timeout: the member it went to may be stuck going away, and another may
// answer the next try.
var errTryTimedOut = errors.New("etcd did not answer in time")

// triesPerRequest is how many tries share a request's timeout.
const triesPerRequest = 3

// try runs one try of an etcd call, bounded by its share of the request
// timeout.
func try[T any](ctx context.Context, timeout time.Duration, call func(context.Context) (T, error)) (T, error) {
	tctx, cancel := context.WithTimeout(ctx, max(timeout/triesPerRequest, 50*time.Millisecond))
	defer cancel()
	v, err := call(tctx)
	if err != nil && ctx.Err() == nil && tctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", errTryTimedOut, err)
	}
	return v, err
}

// commit runs one try of the transaction that build makes.
func (s *Store) commit(ctx context.Context, build func(clientv3.Txn) clientv3.Txn) (*clientv3.TxnResponse, error) {
	return try(ctx, s.timeout, func(ctx context.Context) (*clientv3.TxnResponse, error) { return build(s.cli.Txn(ctx)).Commit() })
}

// get is a linearizable Get, retried on transient errors.
func (s *Store) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return retry(ctx, func() (*clientv3.GetResponse, error) {
		return try(ctx, s.timeout, func(ctx context.Context) (*clientv3.GetResponse, error) { return s.cli.Get(ctx, key, opts...) })
	})
}

// readTxn runs reads in one transaction, which etcd serves at a single
// revision, retried on transient errors.
func (s *Store) readTxn(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	return retry(ctx, func() (*clientv3.TxnResponse, error) {
		return s.commit(ctx, func(t clientv3.Txn) clientv3.Txn { return t.Then(ops...) })
	})
}

// isOurs reports whether the record under k's digest is k: after a write
// that failed transiently and was retried, it tells "already applied"
// from a genuine conflict.
func (s *Store) isOurs(ctx context.Context, k keystore.Key) bool {
	stored, err := s.getByHex(ctx, hexOf(k.Hash))
	return err == nil && stored.ID == k.ID
}
