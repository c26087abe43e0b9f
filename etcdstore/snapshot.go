package etcdstore

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Snapshot copies every record under the prefix as of one revision, the
// cluster's when it is called, into a bbolt file of boltstore's layout:
// a backup of a cluster restores as a gateway's file does. Writes go on
// meanwhile; the copy is held in memory until written (about 400 bytes a
// key). A copy that takes longer than etcd keeps old revisions (its
// compaction) fails, and can be taken again.
func (s *Store) Snapshot(ctx context.Context) (keystore.Snapshot, error) {
	resp, err := s.get(ctx, s.prefix, clientv3.WithCountOnly())
	if err != nil {
		return nil, fault(err)
	}
	at := *s
	at.rev = resp.Header.Revision
	var r boltstore.Records
	if r.Keys, err = at.Keys(ctx); err != nil {
		return nil, err
	}
	if r.Users, err = at.Users(ctx); err != nil {
		return nil, err
	}
	if r.Credits, err = at.CreditAccounts(ctx); err != nil {
		return nil, err
	}
	if r.Notices, err = at.allNotices(ctx, "notices/"); err != nil {
		return nil, err
	}
	if r.NoticesDone, err = at.allNotices(ctx, "notices-done/"); err != nil {
		return nil, err
	}
	return boltstore.SnapshotOf(r)
}

// allNotices lists the notices of every endpoint under kind ("notices/"
// or "notices-done/"): <endpoint>/<event id>, the endpoint being hex.
func (s *Store) allNotices(ctx context.Context, kind string) ([]keystore.Notice, error) {
	prefix := s.prefix + kind
	var out []keystore.Notice
	err := s.rangeAll(ctx, prefix, func(kv *mvccpb.KeyValue) error {
		endpoint, id, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), prefix), "/")
		if !ok {
			return fmt.Errorf("etcd: notice without an endpoint at %q", kv.Key)
		}
		n, err := keystore.UnmarshalNotice(endpoint, id, kv.Value)
		out = append(out, n)
		return err
	})
	return out, err
}

// PendingNotices lists the pending notices of every endpoint, for copies
// of the store (restore, migrate).
func (s *Store) PendingNotices(ctx context.Context) ([]keystore.Notice, error) {
	return s.allNotices(ctx, "notices/")
}

// Interface guard.
var _ keystore.Snapshotter = (*Store)(nil)
