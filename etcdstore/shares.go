package etcdstore

import (
	"context"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// The share tables by which gateways divide the rate limits some of them
// run short of (keystore.ShareTables), one record each under P shares/.
// They are written only while a limit is busy, a few times a second at
// most, never per request.

func (s *Store) sharesPrefix() string { return s.prefix + "shares/" }

// SwapShareTable writes or deletes one table if it is still at rev.
func (s *Store) SwapShareTable(ctx context.Context, id string, rev int64, t *keystore.ShareTable) (int64, bool, error) {
	key := s.sharesPrefix() + id
	cond := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
	if rev == 0 {
		cond = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	op := clientv3.OpDelete(key)
	if t != nil {
		b, err := keystore.MarshalShareTable(*t)
		if err != nil {
			return 0, false, err
		}
		op = clientv3.OpPut(key, string(b))
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cond).Then(op).Commit()
	if err != nil {
		return 0, false, fault(err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// FollowShareTables hands f every table, then every change, until ctx
// ends. A broken watch resumes after the last change it delivered; one
// whose resume point was compacted away loads every table again.
func (s *Store) FollowShareTables(ctx context.Context, f keystore.ShareFollower) {
	ctx = clientv3.WithRequireLeader(ctx)
	next := int64(0) // revision to resume from; 0: load afresh
	for ctx.Err() == nil {
		if next == 0 {
			rev, err := s.loadShareTables(ctx, f)
			if err != nil {
				sleep(ctx, s.syncEvery)
				continue
			}
			next = rev + 1
		}
		next = s.followShares(ctx, f, next)
		if ctx.Err() == nil {
			s.logger.Debug("share table watch broken; resuming", zap.Int64("revision", next))
			sleep(ctx, s.syncEvery/5)
		}
	}
}

// loadShareTables hands f every table and returns the revision read at.
func (s *Store) loadShareTables(ctx context.Context, f keystore.ShareFollower) (int64, error) {
	resp, err := s.get(ctx, s.sharesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	tables := make(map[string]keystore.VersionedShareTable, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if id, t, ok := s.shareTable(kv); ok {
			tables[id] = keystore.VersionedShareTable{Table: t, Rev: kv.ModRevision}
		}
	}
	f.SharesLoaded(tables, resp.Header.Revision)
	return resp.Header.Revision, nil
}

// followShares watches from revision from, and returns the revision to
// resume from, or 0 to load afresh.
func (s *Store) followShares(ctx context.Context, f keystore.ShareFollower, from int64) int64 {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range s.cli.Watch(ctx, s.sharesPrefix(), clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if resp.CompactRevision != 0 {
			return 0
		}
		if resp.Err() != nil {
			return from
		}
		for _, ev := range resp.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), s.sharesPrefix())
			if ev.Type == mvccpb.DELETE {
				f.ShareChanged(id, nil, ev.Kv.ModRevision)
			} else if _, t, ok := s.shareTable(ev.Kv); ok {
				f.ShareChanged(id, &t, ev.Kv.ModRevision)
			}
			from = ev.Kv.ModRevision + 1
		}
	}
	return from
}

// shareTable decodes one record; a damaged one is logged and skipped
// (its limit then stays divided equally on this gateway).
func (s *Store) shareTable(kv *mvccpb.KeyValue) (string, keystore.ShareTable, bool) {
	id := strings.TrimPrefix(string(kv.Key), s.sharesPrefix())
	t, err := keystore.UnmarshalShareTable(kv.Value)
	if err != nil {
		s.logger.Warn("skipping a damaged share table", zap.String("id", id), zap.Error(err))
		return id, t, false
	}
	return id, t, true
}

// Interface guard.
var _ keystore.ShareTables = (*Store)(nil)
