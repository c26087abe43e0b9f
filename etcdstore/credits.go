package etcdstore

import (
	"context"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func (s *Store) creditPath(id string) string { return s.prefix + "credits/" + id }

// UpdateCredits applies fn to the credit account id and writes the result
// in a transaction that fails if another writer changed the account since
// it was read, retrying then. After a try whose answer was lost, fn runs
// again on what is stored; the account's recent operations make that
// harmless (see keystore.CreditAccount).
func (s *Store) UpdateCredits(ctx context.Context, id string, fn func(*keystore.CreditAccount, bool) error) (keystore.CreditAccount, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	path := s.creditPath(id)
	for n := 1; ; n++ {
		resp, err := s.get(ctx, path)
		if err != nil {
			return keystore.CreditAccount{}, fault(err)
		}
		a := keystore.CreditAccount{ID: id}
		var rev int64 // 0: the account does not exist
		if len(resp.Kvs) > 0 {
			if a, err = keystore.UnmarshalCreditAccount(id, resp.Kvs[0].Value); err != nil {
				return keystore.CreditAccount{}, err
			}
			rev = resp.Kvs[0].ModRevision
		}
		if err := fn(&a, rev != 0); err != nil {
			return keystore.CreditAccount{}, err
		}
		a.ID = id
		val, err := keystore.MarshalCreditAccount(a)
		if err != nil {
			return keystore.CreditAccount{}, err
		}
		guard := clientv3.Compare(clientv3.ModRevision(path), "=", rev)
		if rev == 0 {
			guard = clientv3.Compare(clientv3.CreateRevision(path), "=", 0)
		}
		txn, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(guard).Then(clientv3.OpPut(path, string(val)))
		})
		switch {
		case err != nil && transient(err) && backoff(ctx, n):
			continue
		case err != nil:
			return keystore.CreditAccount{}, fault(err)
		case txn.Succeeded:
			return a, nil
		}
		// Another gateway changed the account meanwhile: read it again.
	}
}

// CreditAccount returns the credit account id.
func (s *Store) CreditAccount(ctx context.Context, id string) (keystore.CreditAccount, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := s.get(ctx, s.creditPath(id))
	if err != nil {
		return keystore.CreditAccount{}, fault(err)
	}
	if len(resp.Kvs) == 0 {
		return keystore.CreditAccount{}, keystore.ErrNotFound
	}
	return keystore.UnmarshalCreditAccount(id, resp.Kvs[0].Value)
}

// CreditAccounts returns every credit account, by id.
func (s *Store) CreditAccounts(ctx context.Context) ([]keystore.CreditAccount, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
	defer cancel()
	var out []keystore.CreditAccount
	prefix := s.prefix + "credits/"
	err := s.rangeAll(ctx, prefix, func(kv *mvccpb.KeyValue) error {
		a, err := keystore.UnmarshalCreditAccount(strings.TrimPrefix(string(kv.Key), prefix), kv.Value)
		out = append(out, a)
		return err
	})
	return out, err
}
