package etcdstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Membership timing: a gateway that stops is counted out within
// memberTTL, and the others see the count change within memberPoll.
const (
	memberTTL  = 5 // seconds
	memberPoll = time.Second
)

// JoinMembers registers this process as one of the gateways sharing the
// store, under P members/ with a lease that lapses when it stops, and
// reports its id and the live gateways' whenever they change, until ctx
// ends. Gateways divide rate limits and lockout thresholds by it. While
// etcd cannot be reached it keeps the last report.
func (s *Store) JoinMembers(ctx context.Context, report func(keystore.Members)) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	prefix := s.prefix + "members/"
	var last []string
	var lease clientv3.LeaseID
	t := time.NewTicker(memberPoll)
	defer t.Stop()
	defer func() {
		if lease != 0 { // leave at once rather than after the TTL
			c, cancel := context.WithTimeout(context.Background(), s.timeout)
			_, _ = s.cli.Revoke(c, lease)
			cancel()
		}
	}()
	for {
		if lease == 0 {
			lease = s.join(ctx, prefix+id)
		}
		if lease != 0 {
			c, cancel := context.WithTimeout(ctx, s.timeout)
			_, err := s.cli.KeepAliveOnce(c, lease)
			if err == nil {
				var resp *clientv3.GetResponse
				if resp, err = s.cli.Get(c, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()); err == nil {
					ids := make([]string, 0, len(resp.Kvs))
					for _, kv := range resp.Kvs {
						ids = append(ids, string(kv.Key[len(prefix):]))
					}
					slices.Sort(ids)
					if i := slices.Index(ids, id); i >= 0 && !slices.Equal(ids, last) {
						last = ids
						report(keystore.Members{Self: id, IDs: slices.Clone(ids)})
						s.logger.Info("gateways sharing the store", zap.Int("count", len(ids)), zap.Int("index", i))
					}
				}
			} else if ctx.Err() == nil {
				lease = 0 // expired while etcd was away: join again
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// join puts this process's member key with a new lease, and returns the
// lease (0 if etcd did not answer).
func (s *Store) join(ctx context.Context, key string) clientv3.LeaseID {
	c, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	grant, err := s.cli.Grant(c, memberTTL)
	if err != nil {
		return 0
	}
	if _, err := s.cli.Put(c, key, "", clientv3.WithLease(grant.ID)); err != nil {
		return 0
	}
	return grant.ID
}
