package etcdstore

import (
	"context"
	"errors"
	"slices"
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
	if err := keystore.CheckName(u.Name); err != nil {
		return err
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

// UpdateUser applies fn to the stored user name, retrying if another
// writer changed the user in between.
func (s *Store) UpdateUser(ctx context.Context, name string, fn func(*keystore.User) error) (keystore.User, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	for n := 1; ; n++ {
		u, rev, err := s.getUser(ctx, name)
		if err != nil {
			return keystore.User{}, err
		}
		fixed := u
		if err := fn(&u); err != nil {
			return keystore.User{}, err
		}
		u.Name, u.Created = fixed.Name, fixed.Created
		val, err := keystore.MarshalUser(u)
		if err != nil {
			return keystore.User{}, err
		}
		path := s.userPath(name)
		resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(clientv3.Compare(clientv3.ModRevision(path), "=", rev)).
				Then(clientv3.OpPut(path, string(val)))
		})
		if err != nil && transient(err) && backoff(ctx, n) {
			continue // applying fn again to what is stored is harmless
		}
		if err != nil {
			return keystore.User{}, fault(err)
		}
		if resp.Succeeded {
			return u, nil
		}
	}
}

// DeleteUser removes a user and all their keys. A user with more keys than
// fit in one transaction loses them over several, and the user record goes
// last, in the transaction that finds no key left: if the gateway stops
// midway the user still exists, with fewer keys, and deleting again
// finishes the job.
func (s *Store) DeleteUser(ctx context.Context, name string) ([]keystore.Key, error) {
	return s.deleteKeysOf(ctx, keystore.PasswordUser(name), true)
}

// DeleteKeysOf removes every key of owner, over several transactions if
// there are more than fit in one, until it finds none left.
func (s *Store) DeleteKeysOf(ctx context.Context, owner keystore.Owner) ([]keystore.Key, error) {
	return s.deleteKeysOf(ctx, owner, false)
}

// deleteKeysOf removes owner's keys a transaction's worth at a time, each
// transaction guarded by the owner's index not having changed since it was
// read; with withUser, the password user named by owner goes in the
// transaction that finds no key left, and must exist.
func (s *Store) deleteKeysOf(ctx context.Context, owner keystore.Owner, withUser bool) ([]keystore.Key, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
	defer cancel()
	var removed, tried []keystore.Key // tried: keys of a try that failed
	prefix := s.ownerPrefix(owner)
	from, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	for n := 1; ; n++ {
		var userRev int64
		if withUser {
			var err error
			_, userRev, err = s.getUser(ctx, owner.Name)
			if errors.Is(err, keystore.ErrNotFound) && tried != nil {
				return append(removed, tried...), nil // the last try was applied
			}
			if err != nil {
				return removed, err
			}
		}
		index, err := s.get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(userKeysPerTxn))
		if err != nil {
			return removed, fault(err)
		}
		hexes := make([]string, len(index.Kvs))
		for i, kv := range index.Kvs {
			hexes[i] = string(kv.Value)
		}
		// Keys of a try whose answer was lost and that are gone now were
		// removed by it (or by someone else: gone either way).
		for _, k := range tried {
			if !slices.Contains(hexes, hexOf(k.Hash)) {
				removed = append(removed, k)
			}
		}
		tried = nil
		last := !index.More
		if !withUser && len(hexes) == 0 {
			return removed, nil
		}
		keys, err := s.getMany(ctx, hexes)
		if err != nil {
			return removed, err
		}
		keys = ownedBy(keys, owner)
		var ops []clientv3.Op
		for _, k := range keys {
			ops = append(ops, s.deleteKeyOps(k)...)
		}
		// Nothing changed in the owner's index since it was read, so the
		// keys deleted are all there were, or the first of them.
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(prefix), "<", index.Header.Revision+1).WithPrefix(),
		}
		if withUser {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.userPath(owner.Name)), "=", userRev))
			if last {
				ops = append(ops, clientv3.OpDelete(s.userPath(owner.Name)))
			}
		}
		resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn { return t.If(cmps...).Then(ops...) })
		if err != nil && transient(err) && backoff(ctx, n) {
			tried = keys
			continue
		}
		if err != nil {
			return removed, fault(err)
		}
		if !resp.Succeeded {
			continue
		}
		removed = append(removed, keys...)
		if withUser && last {
			return removed, nil
		}
		// What is left of this chunk belongs to other owners (names that
		// extend this one's stored form): read on after it.
		from = string(index.Kvs[len(index.Kvs)-1].Key) + "\x00"
	}
}
