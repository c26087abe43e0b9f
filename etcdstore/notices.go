package etcdstore

import (
	"context"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func (s *Store) noticePrefix(endpoint string) string { return s.prefix + "notices/" + endpoint + "/" }

// donePrefix is where done notices are remembered, apart from the queue.
func (s *Store) donePrefix(endpoint string) string {
	return s.prefix + "notices-done/" + endpoint + "/"
}

// AddNotices stores each notice not stored yet; a notice another gateway
// stored first is left as it is.
func (s *Store) AddNotices(ctx context.Context, notices []keystore.Notice) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	for _, n := range notices {
		val, err := keystore.MarshalNotice(n)
		if err != nil {
			return err
		}
		path, done := s.noticePrefix(n.Endpoint)+n.ID, s.donePrefix(n.Endpoint)+n.ID
		// Creating only if absent, the transaction can be tried again
		// after a lost answer.
		_, err = retry(ctx, func() (*clientv3.TxnResponse, error) {
			return s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
				return t.If(clientv3.Compare(clientv3.CreateRevision(path), "=", 0), clientv3.Compare(clientv3.CreateRevision(done), "=", 0)).
					Then(clientv3.OpPut(path, string(val)))
			})
		})
		if err != nil {
			return fault(err)
		}
	}
	return nil
}

// Notices lists the pending notices of an endpoint.
func (s *Store) Notices(ctx context.Context, endpoint string) ([]keystore.Notice, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return s.noticesUnder(ctx, endpoint, s.noticePrefix(endpoint))
}

func (s *Store) noticesUnder(ctx context.Context, endpoint, prefix string) ([]keystore.Notice, error) {
	var out []keystore.Notice
	err := s.rangeAll(ctx, prefix, func(kv *mvccpb.KeyValue) error {
		n, err := keystore.UnmarshalNotice(endpoint, strings.TrimPrefix(string(kv.Key), prefix), kv.Value)
		if err != nil {
			return err
		}
		out = append(out, n)
		return nil
	})
	return out, err
}

// UpdateNotice applies fn to a notice and writes the result in a
// transaction that fails if another gateway wrote the notice since it was
// read; fn then runs again on what that gateway wrote.
func (s *Store) UpdateNotice(ctx context.Context, endpoint, id string, fn func(*keystore.Notice) error) (keystore.Notice, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	path := s.noticePrefix(endpoint) + id
	for n := 1; ; n++ {
		resp, err := s.get(ctx, path)
		if err != nil {
			return keystore.Notice{}, fault(err)
		}
		if len(resp.Kvs) == 0 {
			return keystore.Notice{}, keystore.ErrNotFound
		}
		notice, err := keystore.UnmarshalNotice(endpoint, id, resp.Kvs[0].Value)
		if err != nil {
			return keystore.Notice{}, err
		}
		if err := fn(&notice); err != nil {
			return keystore.Notice{}, err
		}
		val, err := keystore.MarshalNotice(notice)
		if err != nil {
			return keystore.Notice{}, err
		}
		write := []clientv3.Op{clientv3.OpPut(path, string(val))}
		if !notice.Done.IsZero() { // out of the queue, remembered apart
			write = []clientv3.Op{clientv3.OpDelete(path), clientv3.OpPut(s.donePrefix(endpoint)+id, string(val))}
		}
		txn, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(clientv3.Compare(clientv3.ModRevision(path), "=", resp.Kvs[0].ModRevision)).Then(write...)
		})
		switch {
		case err != nil && transient(err) && backoff(ctx, n):
			continue
		case err != nil:
			return keystore.Notice{}, fault(err)
		case txn.Succeeded:
			return notice, nil
		}
		// Written meanwhile (or by our own try whose answer was lost):
		// read it again.
	}
}

// PruneNotices forgets the endpoint's done notices kept past KeepUntil.
func (s *Store) PruneNotices(ctx context.Context, endpoint string, now time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout) // a whole listing
	defer cancel()
	done, err := s.noticesUnder(ctx, endpoint, s.donePrefix(endpoint))
	if err != nil {
		return 0, err
	}
	pruned := 0
	for _, n := range done {
		if !n.KeepUntil.Before(now) {
			continue
		}
		_, err := retry(ctx, func() (*clientv3.DeleteResponse, error) {
			return try(ctx, s.timeout, func(ctx context.Context) (*clientv3.DeleteResponse, error) {
				return s.cli.Delete(ctx, s.donePrefix(endpoint)+n.ID)
			})
		})
		if err != nil {
			return pruned, fault(err)
		}
		pruned++
	}
	return pruned, nil
}

var _ keystore.NoticeStore = (*Store)(nil)
