package etcdstore

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// storedKey is a key as read, with the revision that guards changes to it.
type storedKey struct {
	keystore.Key
	modRev int64
}

// putKeyOps writes k and its indexes, and its last use if it has one: a
// key never used has no last-used record (a reader takes its absence for
// never), which spares every member a fourth put per minted key.
func (s *Store) putKeyOps(k keystore.Key) []clientv3.Op {
	h := hexOf(k.Hash)
	ops := []clientv3.Op{
		clientv3.OpPut(s.keyPath(h), encodeRecord(k)),
		clientv3.OpPut(s.idPath(k.ID), h),
		clientv3.OpPut(s.ownerPath(k), h),
	}
	if !k.LastUsed.IsZero() {
		ops = append(ops, clientv3.OpPut(s.usedPath(h), encodeUsed(k.LastUsed)))
	}
	return ops
}

// deleteKeyOps removes k and its indexes.
func (s *Store) deleteKeyOps(k keystore.Key) []clientv3.Op {
	h := hexOf(k.Hash)
	return []clientv3.Op{
		clientv3.OpDelete(s.keyPath(h)),
		clientv3.OpDelete(s.idPath(k.ID)),
		clientv3.OpDelete(s.ownerPath(k)),
		clientv3.OpDelete(s.usedPath(h)),
	}
}

// absent is true when neither k's digest nor its id is taken.
func (s *Store) absent(k keystore.Key) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(s.keyPath(hexOf(k.Hash))), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(s.idPath(k.ID)), "=", 0),
	}
}

// countTaken reports, when a transaction guarded by absent fails, which
// of k's digest and id exist.
func (s *Store) countTaken(k keystore.Key) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(s.keyPath(hexOf(k.Hash)), clientv3.WithCountOnly()),
		clientv3.OpGet(s.idPath(k.ID), clientv3.WithCountOnly()),
	}
}

func taken(resp *clientv3.TxnResponse) bool {
	for _, r := range resp.Responses {
		if rr := r.GetResponseRange(); rr != nil && rr.Count > 0 {
			return true
		}
	}
	return false
}

// getByHex reads the record stored under a hex digest, with its last use.
func (s *Store) getByHex(ctx context.Context, h string) (storedKey, error) {
	resp, err := s.readTxn(ctx, clientv3.OpGet(s.keyPath(h)), clientv3.OpGet(s.usedPath(h)))
	if err != nil {
		return storedKey{}, fault(err)
	}
	rec := resp.Responses[0].GetResponseRange().Kvs
	if len(rec) == 0 {
		return storedKey{}, keystore.ErrNotFound
	}
	k, err := decodeRecord(rec[0].Value)
	if err != nil {
		return storedKey{}, err
	}
	if used := resp.Responses[1].GetResponseRange().Kvs; len(used) > 0 {
		k.LastUsed = decodeUsed(used[0].Value)
	}
	return storedKey{Key: k, modRev: rec[0].ModRevision}, nil
}

// getByID resolves an id through its index.
func (s *Store) getByID(ctx context.Context, id string) (storedKey, error) {
	resp, err := s.get(ctx, s.idPath(id))
	if err != nil {
		return storedKey{}, fault(err)
	}
	if len(resp.Kvs) == 0 {
		return storedKey{}, keystore.ErrNotFound
	}
	return s.getByHex(ctx, string(resp.Kvs[0].Value))
}

// KeyByHash returns the key whose digest is h, in one round trip; keys
// are found by digest alone, so the stamp is not needed.
func (s *Store) KeyByHash(ctx context.Context, h keystore.Hash, _ string) (keystore.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	k, err := s.getByHex(ctx, hexOf(h))
	return k.Key, err
}

// KeysByHash returns the key each digest names, a zero Key where none, in
// one read transaction per maxTxnOps/2 digests.
func (s *Store) KeysByHash(ctx context.Context, hs []keystore.Hash) ([]keystore.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	hexes := make([]string, len(hs))
	for i, h := range hs {
		hexes[i] = hexOf(h)
	}
	found, err := s.getMany(ctx, hexes)
	if err != nil {
		return nil, err
	}
	byHash := make(map[keystore.Hash]keystore.Key, len(found))
	for _, k := range found {
		byHash[k.Hash] = k
	}
	out := make([]keystore.Key, len(hs))
	for i, h := range hs {
		out[i] = byHash[h]
	}
	return out, nil
}

// KeyByID returns the key with the given id.
func (s *Store) KeyByID(ctx context.Context, id string) (keystore.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	k, err := s.getByID(ctx, id)
	return k.Key, err
}

// getMany reads the records under the given hex digests, in order,
// skipping any deleted since they were listed.
func (s *Store) getMany(ctx context.Context, hexes []string) ([]keystore.Key, error) {
	var out []keystore.Key
	for chunk := range slices.Chunk(hexes, maxTxnOps/2) {
		ops := make([]clientv3.Op, 0, 2*len(chunk))
		for _, h := range chunk {
			ops = append(ops, clientv3.OpGet(s.keyPath(h)), clientv3.OpGet(s.usedPath(h)))
		}
		resp, err := s.readTxn(ctx, ops...)
		if err != nil {
			return nil, fault(err)
		}
		for i := 0; i < len(resp.Responses); i += 2 {
			rec := resp.Responses[i].GetResponseRange().Kvs
			if len(rec) == 0 {
				continue
			}
			k, err := decodeRecord(rec[0].Value)
			if err != nil {
				return nil, err
			}
			if used := resp.Responses[i+1].GetResponseRange().Kvs; len(used) > 0 {
				k.LastUsed = decodeUsed(used[0].Value)
			}
			out = append(out, k)
		}
	}
	return out, nil
}

// KeysByOwner returns owner's keys, oldest first: the owner index sorts by
// creation time.
func (s *Store) KeysByOwner(ctx context.Context, owner keystore.Owner) ([]keystore.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := s.get(ctx, s.ownerPrefix(owner), clientv3.WithPrefix())
	if err != nil {
		return nil, fault(err)
	}
	hexes := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		hexes[i] = string(kv.Value)
	}
	keys, err := s.getMany(ctx, hexes)
	return ownedBy(keys, owner), err
}

// ownedBy keeps the keys of owner: an owner index entry is only a
// candidate, since names that stores did not check may extend another
// owner's stored form.
func ownedBy(keys []keystore.Key, owner keystore.Owner) []keystore.Key {
	out := keys[:0]
	for _, k := range keys {
		if k.Owner == owner {
			out = append(out, k)
		}
	}
	return out
}

// rangeAll calls fn for every pair under prefix, in pages read at one
// revision (the store's, if pinned for a snapshot).
func (s *Store) rangeAll(ctx context.Context, prefix string, fn func(*mvccpb.KeyValue) error) error {
	const page = 1000
	end := clientv3.GetPrefixRangeEnd(prefix)
	from, rev := prefix, s.rev
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.get(ctx, from, opts...)
		if err != nil {
			return fault(err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Keys returns every key, oldest first.
func (s *Store) Keys(ctx context.Context) ([]keystore.Key, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout) // a whole listing
	defer cancel()
	used := make(map[string]time.Time)
	if err := s.rangeAll(ctx, s.prefix+"used/", func(kv *mvccpb.KeyValue) error {
		used[strings.TrimPrefix(string(kv.Key), s.prefix+"used/")] = decodeUsed(kv.Value)
		return nil
	}); err != nil {
		return nil, err
	}
	var out []keystore.Key
	if err := s.rangeAll(ctx, s.prefix+"keys/", func(kv *mvccpb.KeyValue) error {
		k, err := decodeRecord(kv.Value)
		if err != nil {
			return err
		}
		k.LastUsed = used[hexOf(k.Hash)]
		out = append(out, k)
		return nil
	}); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b keystore.Key) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// UpdateKey applies fn to the key with the given id, retrying if another
// writer changed the key in between.
func (s *Store) UpdateKey(ctx context.Context, id string, fn func(*keystore.Key) error) (keystore.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	for n := 1; ; n++ {
		cur, err := s.getByID(ctx, id)
		if err != nil {
			return keystore.Key{}, err
		}
		k := cur.Key
		if err := fn(&k); err != nil {
			return keystore.Key{}, err
		}
		// Identity and index fields stay as they were.
		k.ID, k.Hash, k.Owner, k.Created, k.Preview, k.LastUsed, k.Stamped = cur.ID, cur.Hash, cur.Owner, cur.Created, cur.Preview, cur.LastUsed, cur.Stamped
		path := s.keyPath(hexOf(k.Hash))
		resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(clientv3.Compare(clientv3.ModRevision(path), "=", cur.modRev)).
				Then(clientv3.OpPut(path, encodeRecord(k)))
		})
		if err != nil && transient(err) && backoff(ctx, n) {
			continue // applying fn again to what is stored is harmless
		}
		if err != nil {
			return keystore.Key{}, fault(err)
		}
		if resp.Succeeded {
			return k, nil
		}
	}
}

// RotateKey stores next and retires oldID in one transaction, which
// fails if the old key changed since it was checked or, with a grace
// period and a limit, if the owner gained a key since they were counted.
func (s *Store) RotateKey(ctx context.Context, oldID string, next keystore.Key, retireAt time.Time, maxPerOwner int) (keystore.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var tried storedKey // the old key as the last failed try saw it
	for n := 1; ; n++ {
		old, err := s.getByID(ctx, oldID)
		if tried.ID != "" && (errors.Is(err, keystore.ErrNotFound) || err == nil && old.Rotated) && s.isOurs(ctx, next) {
			return tried.Key, nil // an earlier try was applied
		}
		if err != nil {
			return keystore.Key{}, err
		}
		if err := keystore.CheckRotatable(old.Key); err != nil {
			return keystore.Key{}, err
		}
		cmps := append(s.absent(next), clientv3.Compare(clientv3.ModRevision(s.keyPath(hexOf(old.Hash))), "=", old.modRev))
		ops := s.putKeyOps(next)
		if retireAt.IsZero() {
			ops = append(ops, s.deleteKeyOps(old.Key)...)
		} else {
			ops = append(ops, clientv3.OpPut(s.keyPath(hexOf(old.Hash)), encodeRecord(keystore.Retired(old.Key, retireAt))))
			if maxPerOwner > 0 {
				guard, err := s.underLimit(ctx, old.Owner, maxPerOwner)
				if err != nil {
					return keystore.Key{}, err
				}
				cmps = append(cmps, guard)
			}
		}
		resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(cmps...).Then(ops...).Else(s.countTaken(next)...)
		})
		switch {
		case err != nil && transient(err) && backoff(ctx, n):
			tried = old
			continue
		case err != nil:
			return keystore.Key{}, fault(err)
		case resp.Succeeded:
			return old.Key, nil
		case tried.ID != "" && s.isOurs(ctx, next):
			return tried.Key, nil
		case taken(resp):
			return keystore.Key{}, keystore.ErrExists
		}
		// The old key or the owner's index changed meanwhile: read again.
	}
}

// underLimit counts owner's keys and returns ErrLimit if there are
// maxPerOwner already, or else a comparison that holds only while no
// entry of the owner's index changed since the count.
func (s *Store) underLimit(ctx context.Context, owner keystore.Owner, maxPerOwner int) (clientv3.Cmp, error) {
	counts, guards, err := s.countKeysOf(ctx, []keystore.Owner{owner})
	if err != nil {
		return clientv3.Cmp{}, fault(err)
	}
	if counts[owner] >= maxPerOwner {
		return clientv3.Cmp{}, keystore.ErrLimit
	}
	return guards[owner], nil
}

// ownerUnchangedSince holds while no entry of owner's index was written
// after revision rev (a count's): a key added since fails it; a key
// deleted since does not, the count being then too high, never too low.
func (s *Store) ownerUnchangedSince(owner keystore.Owner, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(s.ownerPrefix(owner)), "<", rev+1).WithPrefix()
}

// DeleteKey removes the key with the given id and returns what it was.
func (s *Store) DeleteKey(ctx context.Context, id string) (keystore.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var tried storedKey // the key as the last failed try saw it
	for n := 1; ; n++ {
		k, err := s.getByID(ctx, id)
		if errors.Is(err, keystore.ErrNotFound) && tried.ID != "" {
			return tried.Key, nil // an earlier try was applied
		}
		if err != nil {
			return keystore.Key{}, err
		}
		resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(clientv3.Compare(clientv3.ModRevision(s.keyPath(hexOf(k.Hash))), "=", k.modRev)).
				Then(s.deleteKeyOps(k.Key)...)
		})
		if err != nil && transient(err) && backoff(ctx, n) {
			tried = k
			continue
		}
		if err != nil {
			return keystore.Key{}, fault(err)
		}
		if resp.Succeeded {
			return k.Key, nil
		}
	}
}

// TouchKeys raises last-used times, each only if it is newer than what any
// gateway wrote, in a few transactions whatever the number of keys: the
// ids are resolved in one round of reads, then each time is written by a
// nested transaction that compares it with the stored one, or writes the
// first one of a key never used. Keys deleted meanwhile (no record under
// keys/ any more) are skipped.
func (s *Store) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	ids := make([]string, 0, len(lastUsed))
	for id := range lastUsed {
		ids = append(ids, id)
	}
	for chunk := range slices.Chunk(ids, maxTxnOps) {
		gets := make([]clientv3.Op, len(chunk))
		for i, id := range chunk {
			gets[i] = clientv3.OpGet(s.idPath(id))
		}
		resp, err := s.readTxn(ctx, gets...)
		if err != nil {
			return fault(err)
		}
		var touches []clientv3.Op
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 {
				continue // deleted since it was used
			}
			h := string(kvs[0].Value)
			path := s.usedPath(h)
			t := encodeUsed(lastUsed[chunk[i]].Truncate(time.Microsecond))
			put := []clientv3.Op{clientv3.OpPut(path, t)}
			// A value comparison fails on a missing record: the Else
			// branch writes a key's first use.
			first := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(path), "=", 0)}, put, nil)
			touches = append(touches, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.keyPath(h)), ">", 0)},
				[]clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(path), "<", t)}, put, []clientv3.Op{first})}, nil))
		}
		if len(touches) == 0 {
			continue
		}
		// Raising to the same time again is harmless, so retry freely.
		if _, err := retry(ctx, func() (*clientv3.TxnResponse, error) {
			return s.commit(ctx, func(t clientv3.Txn) clientv3.Txn { return t.Then(touches...) })
		}); err != nil {
			return fault(err)
		}
	}
	return nil
}

// hashFromPath returns the digest named by a path under keys/.
func (s *Store) hashFromPath(path []byte) (keystore.Hash, bool) {
	var h keystore.Hash
	name := path[len(s.prefix)+len("keys/"):]
	if len(name) != 2*len(h) {
		return h, false
	}
	_, err := hex.Decode(h[:], name)
	return h, err == nil
}
