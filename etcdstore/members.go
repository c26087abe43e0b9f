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

// memberFollowsLoad is the member record of a gateway that divides rate
// limits by the load (keystore.Meter.FollowLoad); any other value, such
// as the empty one of earlier releases, is a gateway keeping equal parts.
const memberFollowsLoad = "follows-load"

// JoinMembers registers this process as one of the gateways sharing the
// store, under P members/ with a lease that lapses when it stops, saying
// whether it divides rate limits by the load, and reports its id and the
// live gateways' whenever they change, until ctx ends. Gateways divide
// rate limits and lockout thresholds by it. While etcd cannot be reached
// it keeps the last report.
func (s *Store) JoinMembers(ctx context.Context, followsLoad bool, report func(keystore.Members)) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	prefix := s.prefix + "members/"
	var last keystore.Members
	var lease clientv3.LeaseID
	mark := ""
	if followsLoad {
		mark = memberFollowsLoad
	}
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
			lease = s.join(ctx, prefix+id, mark)
		}
		if lease != 0 {
			c, cancel := context.WithTimeout(ctx, s.timeout)
			_, err := s.cli.KeepAliveOnce(c, lease)
			if err == nil {
				var resp *clientv3.GetResponse
				if resp, err = s.cli.Get(c, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)); err == nil {
					ms := keystore.Members{Self: id, IDs: make([]string, 0, len(resp.Kvs))}
					for _, kv := range resp.Kvs {
						member := string(kv.Key[len(prefix):])
						ms.IDs = append(ms.IDs, member)
						if string(kv.Value) != memberFollowsLoad {
							ms.Fixed = append(ms.Fixed, member)
						}
					}
					if i := ms.Index(); i >= 0 && !(slices.Equal(ms.IDs, last.IDs) && slices.Equal(ms.Fixed, last.Fixed)) {
						last = ms
						report(ms)
						s.logger.Info("gateways sharing the store", zap.Int("count", ms.Count()), zap.Int("index", i), zap.Int("equal_parts", len(ms.Fixed)))
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
func (s *Store) join(ctx context.Context, key, mark string) clientv3.LeaseID {
	c, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	grant, err := s.cli.Grant(c, memberTTL)
	if err != nil {
		return 0
	}
	if _, err := s.cli.Put(c, key, mark, clientv3.WithLease(grant.ID)); err != nil {
		return 0
	}
	return grant.ID
}
