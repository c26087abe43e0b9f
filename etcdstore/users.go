package etcdstore

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// userKeysPerTxn is how many of a user's keys one transaction removes:
// four operations each, and the user's own.
const userKeysPerTxn = (maxTxnOps - 1) / 4

func (s *Store) getUser(ctx context.Context, name string) (keystore.User, int64, error) {
	resp, err := s.get(ctx, s.userPath(name))
	if err != nil {
		return keystore.User{}, 0, fault(err)
	}
	if len(resp.Kvs) == 0 {
		return keystore.User{}, 0, keystore.ErrNotFound
	}
	u, err := keystore.UnmarshalUser(name, resp.Kvs[0].Value)
	return u, resp.Kvs[0].ModRevision, err
}

// User returns the stored user name.
func (s *Store) User(ctx context.Context, name string) (keystore.User, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	u, _, err := s.getUser(ctx, name)
	return u, err
}

// Users returns every stored user, by name.
func (s *Store) Users(ctx context.Context) ([]keystore.User, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var out []keystore.User
	prefix := s.prefix + "users/"
	err := s.rangeAll(ctx, prefix, func(kv *mvccpb.KeyValue) error {
		u, err := keystore.UnmarshalUser(strings.TrimPrefix(string(kv.Key), prefix), kv.Value)
		out = append(out, u)
		return err
	})
	return out, err
}

// CreateUser adds a user, or returns ErrExists.
func (s *Store) CreateUser(ctx context.Context, u keystore.User) error {
	if u.Name == "" {
		return errors.New("username is empty")
	}
	val, err := keystore.MarshalUser(u)
	if err != nil {
		return err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	path := s.userPath(u.Name)
	for n := 1; ; n++ {
		resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(clientv3.Compare(clientv3.CreateRevision(path), "=", 0)).
				Then(clientv3.OpPut(path, string(val))).
				Else(clientv3.OpGet(path))
		})
		switch {
		case err != nil && transient(err) && backoff(ctx, n):
			continue
		case err != nil:
			return fault(err)
		case resp.Succeeded:
			return nil
		}
		// After a failed try, finding exactly what it wrote means it was
		// applied.
		if kvs := resp.Responses[0].GetResponseRange().Kvs; n > 1 && len(kvs) > 0 && string(kvs[0].Value) == string(val) {
			return nil
		}
		return keystore.ErrExists
	}
}

// SetPassword replaces a user's password hash.
func (s *Store) SetPassword(ctx context.Context, name, hash string) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	for n := 1; ; n++ {
		u, rev, err := s.getUser(ctx, name)
		if err != nil {
			return err
		}
		u.PasswordHash = hash
		val, err := keystore.MarshalUser(u)
		if err != nil {
			return err
		}
		path := s.userPath(name)
		resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(clientv3.Compare(clientv3.ModRevision(path), "=", rev)).
				Then(clientv3.OpPut(path, string(val)))
		})
		if err != nil && transient(err) && backoff(ctx, n) {
			continue
		}
		if err != nil {
			return fault(err)
		}
		if resp.Succeeded {
			return nil
		}
	}
}

// DeleteUser removes a user and all their keys. A user with more keys than
// fit in one transaction loses them over several, and the user record goes
// last, in the transaction that finds no key left: if the gateway stops
// midway the user still exists, with fewer keys, and deleting again
// finishes the job.
func (s *Store) DeleteUser(ctx context.Context, name string) ([]keystore.Key, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
	defer cancel()
	var removed, tried []keystore.Key // tried: keys of a last try that failed
	for n := 1; ; n++ {
		_, userRev, err := s.getUser(ctx, name)
		if errors.Is(err, keystore.ErrNotFound) && tried != nil {
			return append(removed, tried...), nil // the last try was applied
		}
		if err != nil {
			return removed, err
		}
		index, err := s.get(ctx, s.ownerPrefix(name), clientv3.WithPrefix(), clientv3.WithLimit(userKeysPerTxn))
		if err != nil {
			return removed, fault(err)
		}
		hexes := make([]string, len(index.Kvs))
		for i, kv := range index.Kvs {
			hexes[i] = string(kv.Value)
		}
		keys, err := s.getMany(ctx, hexes)
		if err != nil {
			return removed, err
		}
		var ops []clientv3.Op
		for _, k := range keys {
			ops = append(ops, s.deleteKeyOps(k)...)
		}
		// Nothing changed in the user's index since it was read, so the
		// keys deleted are all there were, or the first of them.
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(s.userPath(name)), "=", userRev),
			clientv3.Compare(clientv3.ModRevision(s.ownerPrefix(name)), "<", index.Header.Revision+1).WithPrefix(),
		}
		last := !index.More
		if last {
			ops = append(ops, clientv3.OpDelete(s.userPath(name)))
		}
		resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn { return t.If(cmps...).Then(ops...) })
		if err != nil && transient(err) && backoff(ctx, n) {
			if last {
				tried = keys
			}
			continue
		}
		if err != nil {
			return removed, fault(err)
		}
		tried = nil
		if !resp.Succeeded {
			continue
		}
		removed = append(removed, keys...)
		if last {
			return removed, nil
		}
	}
}
