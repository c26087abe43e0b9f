package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func ownerPrefix(owner keystore.Owner) []byte { return append([]byte(owner.Encode()), 0) }

func ownerIndexKey(k keystore.Key) []byte {
	owner := k.Owner.Encode()
	b := make([]byte, 0, len(owner)+1+8+len(k.ID))
	b = append(b, owner...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(keystore.UnixMicros(k.Created)))
	return append(b, k.ID...)
}

// CreateKey stores k. It returns once the transaction holding k is
// committed and synced; concurrent calls share that transaction.
func (s *Store) CreateKey(ctx context.Context, k keystore.Key, opts keystore.CreateOptions) error {
	req := newCreateRequest(k, opts)
	select {
	case s.creates <- req:
	case <-s.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once handed over, wait for the outcome even if ctx ends: the key may
	// be committed, and the caller must not be told otherwise.
	return <-req.done
}

func checkCreate(tx *bolt.Tx, k keystore.Key, opts keystore.CreateOptions) error {
	return newPresence(tx).checkCreate(k, digestEntryOf(k), opts)
}

// checkCreate is the package's checkCreate for a key indexed at at, with
// p's cursors.
func (p *presence) checkCreate(k keystore.Key, at digestEntry, opts keystore.CreateOptions) error {
	if holds(p.keys, []byte(k.ID)) || p.digestTaken(k, at) {
		return keystore.ErrExists
	}
	if opts.StoredUser && (k.Owner.Source != keystore.SourcePassword || p.tx.Bucket(bucketUsers).Get([]byte(k.Owner.Name)) == nil) {
		return keystore.ErrUnknownOwner
	}
	return checkLimit(p.tx, k.Owner, opts.MaxPerOwner)
}

// A digestEntry is where a key's digest is indexed: a stamped key's under
// its stamp and digest, so that new keys append to the index; any other
// key's under its digest alone.
type digestEntry struct {
	bucket, key []byte
}

func digestEntryOf(k keystore.Key) digestEntry {
	if k.Stamped && len(k.ID) >= keystore.StampLen {
		return digestEntry{bucketStamped, stampedDigest(k.ID[:keystore.StampLen], k.Hash)}
	}
	h := k.Hash // a copy: a slice of k.Hash would keep all of k on the heap
	return digestEntry{bucketHashes, h[:]}
}

func stampedDigest(stamp string, h keystore.Hash) []byte {
	return append(append(make([]byte, 0, len(stamp)+len(h)), stamp...), h[:]...)
}

// digestTaken reports whether k's digest names a stored key. A stamped
// key's text determines its stamp (Key.Stamped), so its digest can only
// be taken under that stamp, or in the unstamped index by a key brought in
// before stamps. A key that is not stamped (only a migration brings one
// in) may share its digest with a stamped key under any stamp: the
// stamped index is walked for it.
func (p *presence) digestTaken(k keystore.Key, at digestEntry) bool {
	if holds(p.hashes, k.Hash[:]) {
		return true
	}
	if bytes.Equal(at.bucket, bucketStamped) {
		return holds(p.stamped, at.key)
	}
	return len(scanStamped(p.tx, map[keystore.Hash]int{k.Hash: 0})) > 0
}

// A presence tells, within one transaction, whether an id or a digest is
// stored, with one cursor per bucket: bbolt's Get makes a cursor and grows
// its stack on each call, and a group commit checks three buckets per mint.
// A cursor sought anew sees the transaction's own writes.
type presence struct {
	tx                    *bolt.Tx
	keys, hashes, stamped *bolt.Cursor
}

func newPresence(tx *bolt.Tx) *presence {
	return &presence{tx, tx.Bucket(bucketKeys).Cursor(), tx.Bucket(bucketHashes).Cursor(), tx.Bucket(bucketStamped).Cursor()}
}

// holds reports whether c's bucket holds key.
func holds(c *bolt.Cursor, key []byte) bool {
	k, _ := c.Seek(key)
	return k != nil && bytes.Equal(k, key)
}

// checkLimit returns ErrLimit if maxPerOwner > 0 and owner holds that
// many keys.
func checkLimit(tx *bolt.Tx, owner keystore.Owner, maxPerOwner int) error {
	if maxPerOwner <= 0 {
		return nil
	}
	n := 0
	prefix := ownerPrefix(owner)
	c := tx.Bucket(bucketOwners).Cursor()
	for ik, _ := c.Seek(prefix); ik != nil && bytes.HasPrefix(ik, prefix); ik, _ = c.Next() {
		if n++; n >= maxPerOwner {
			return keystore.ErrLimit
		}
	}
	return nil
}

// keysOf reads owner's keys, oldest first. The index is searched by the
// owner's stored form; entries of other owners whose names, as stores
// that did not check names kept them, share that prefix are skipped.
func keysOf(tx *bolt.Tx, owner keystore.Owner) ([]keystore.Key, error) {
	var out []keystore.Key
	prefix := ownerPrefix(owner)
	c := tx.Bucket(bucketOwners).Cursor()
	for ik, _ := c.Seek(prefix); ik != nil && bytes.HasPrefix(ik, prefix); ik, _ = c.Next() {
		if len(ik) < len(prefix)+8 {
			continue
		}
		k, err := getKey(tx, ik[len(prefix)+8:])
		if errors.Is(err, keystore.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if k.Owner == owner {
			out = append(out, k)
		}
	}
	return out, nil
}

func putKey(tx *bolt.Tx, k keystore.Key, val []byte) error {
	if err := putKeyRecord(tx, k, val); err != nil {
		return err
	}
	at := digestEntryOf(k)
	return tx.Bucket(at.bucket).Put(at.key, []byte(k.ID))
}

// putKeyRecord writes k's record and its owner index entry, not its
// digest.
func putKeyRecord(tx *bolt.Tx, k keystore.Key, val []byte) error {
	if val == nil {
		val = keystore.MarshalKey(k)
	}
	if err := tx.Bucket(bucketKeys).Put([]byte(k.ID), val); err != nil {
		return err
	}
	return tx.Bucket(bucketOwners).Put(ownerIndexKey(k), nil)
}

func deleteKey(tx *bolt.Tx, k keystore.Key) error {
	if err := tx.Bucket(bucketKeys).Delete([]byte(k.ID)); err != nil {
		return err
	}
	at := digestEntryOf(k)
	if err := tx.Bucket(at.bucket).Delete(at.key); err != nil {
		return err
	}
	return tx.Bucket(bucketOwners).Delete(ownerIndexKey(k))
}

func getKey(tx *bolt.Tx, id []byte) (keystore.Key, error) {
	v := tx.Bucket(bucketKeys).Get(id)
	if v == nil {
		return keystore.Key{}, keystore.ErrNotFound
	}
	return keystore.UnmarshalKey(string(id), v)
}

// KeyByHash returns the key whose digest is h. With its text's stamp, a
// stamped key is one index read away; without, as for a digest an
// operator sends, the stamped index is walked (21 ns per key,
// BenchmarkDigestOnlyLookup: about 21 ms at 10⁶ keys).
func (s *Store) KeyByHash(_ context.Context, h keystore.Hash, stamp string) (keystore.Key, error) {
	var k keystore.Key
	err := s.db.View(func(tx *bolt.Tx) error {
		id := lookupDigest(tx, h, stamp)
		if id == nil && stamp == "" {
			id = scanStamped(tx, map[keystore.Hash]int{h: 0})[0]
		}
		if id == nil {
			return keystore.ErrNotFound
		}
		var err error
		k, err = getKey(tx, id)
		return err
	})
	return k, err
}

// KeysByHash returns the key each digest names, a zero Key where none,
// scanning the stamped index at most once for all of them.
func (s *Store) KeysByHash(_ context.Context, hs []keystore.Hash) ([]keystore.Key, error) {
	out := make([]keystore.Key, len(hs))
	err := s.db.View(func(tx *bolt.Tx) error {
		ids := make([][]byte, len(hs))
		rest := map[keystore.Hash]int{}
		for i, h := range hs {
			if ids[i] = lookupDigest(tx, h, ""); ids[i] == nil {
				rest[h] = i
			}
		}
		for i, id := range scanStamped(tx, rest) {
			ids[i] = id
		}
		for i, id := range ids {
			if id == nil {
				continue
			}
			k, err := getKey(tx, id)
			if errors.Is(err, keystore.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out[i] = k
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// A digest listed twice names its key twice.
	for i, h := range hs {
		if out[i].ID == "" {
			if j := slices.IndexFunc(out, func(k keystore.Key) bool { return k.ID != "" && k.Hash == h }); j >= 0 {
				out[i] = out[j]
			}
		}
	}
	return out, nil
}

// lookupDigest reads the id indexed under h: with stamp, in the stamped
// index, and in the unstamped one.
func lookupDigest(tx *bolt.Tx, h keystore.Hash, stamp string) []byte {
	if len(stamp) == keystore.StampLen {
		if id := tx.Bucket(bucketStamped).Get(stampedDigest(stamp, h)); id != nil {
			return id
		}
	}
	return tx.Bucket(bucketHashes).Get(h[:])
}

// scanStamped walks the stamped index once and returns, by position, the
// ids of the digests in want, copied out of the transaction.
func scanStamped(tx *bolt.Tx, want map[keystore.Hash]int) map[int][]byte {
	found := make(map[int][]byte, len(want))
	if len(want) == 0 {
		return found
	}
	c := tx.Bucket(bucketStamped).Cursor()
	for k, v := c.First(); k != nil && len(found) < len(want); k, v = c.Next() {
		if len(k) != keystore.StampLen+len(keystore.Hash{}) {
			continue
		}
		if i, ok := want[keystore.Hash(k[keystore.StampLen:])]; ok {
			found[i] = bytes.Clone(v)
		}
	}
	return found
}

// KeyByID returns the key with the given id.
func (s *Store) KeyByID(_ context.Context, id string) (keystore.Key, error) {
	var k keystore.Key
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		k, err = getKey(tx, []byte(id))
		return err
	})
	return k, err
}

// KeysByOwner returns owner's keys, oldest first.
func (s *Store) KeysByOwner(_ context.Context, owner keystore.Owner) ([]keystore.Key, error) {
	var out []keystore.Key
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = keysOf(tx, owner)
		return err
	})
	return out, err
}

// Keys returns every key, oldest first.
func (s *Store) Keys(_ context.Context) ([]keystore.Key, error) {
	var out []keystore.Key
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(id, v []byte) error {
			k, err := keystore.UnmarshalKey(string(id), v)
			out = append(out, k)
			return err
		})
	})
	slices.SortStableFunc(out, func(a, b keystore.Key) int { return a.Created.Compare(b.Created) })
	return out, err
}

// UpdateKey applies fn to the key with the given id.
func (s *Store) UpdateKey(_ context.Context, id string, fn func(*keystore.Key) error) (keystore.Key, error) {
	var k keystore.Key
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if k, err = getKey(tx, []byte(id)); err != nil {
			return err
		}
		fixed := k
		if err := fn(&k); err != nil {
			return err
		}
		// Identity and index fields stay as they were.
		k.ID, k.Hash, k.Owner, k.Created, k.Preview, k.Stamped = fixed.ID, fixed.Hash, fixed.Owner, fixed.Created, fixed.Preview, fixed.Stamped
		return tx.Bucket(bucketKeys).Put([]byte(id), keystore.MarshalKey(k))
	})
	return k, err
}

// RotateKey stores next and retires oldID in one transaction.
func (s *Store) RotateKey(_ context.Context, oldID string, next keystore.Key, retireAt time.Time, maxPerOwner int) (keystore.Key, error) {
	var old keystore.Key
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if old, err = getKey(tx, []byte(oldID)); err != nil {
			return err
		}
		if err := keystore.CheckRotatable(old); err != nil {
			return err
		}
		if err := checkCreate(tx, next, keystore.CreateOptions{}); err != nil {
			return err
		}
		if !retireAt.IsZero() {
			if err := checkLimit(tx, old.Owner, maxPerOwner); err != nil {
				return err
			}
		}
		if err := putKey(tx, next, nil); err != nil {
			return err
		}
		if retireAt.IsZero() {
			return deleteKey(tx, old)
		}
		return tx.Bucket(bucketKeys).Put([]byte(old.ID), keystore.MarshalKey(keystore.Retired(old, retireAt)))
	})
	return old, err
}

// DeleteKey removes the key with the given id and returns what it was.
func (s *Store) DeleteKey(_ context.Context, id string) (keystore.Key, error) {
	var k keystore.Key
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if k, err = getKey(tx, []byte(id)); err != nil {
			return err
		}
		return deleteKey(tx, k)
	})
	return k, err
}

// DeleteKeysOf removes every key of owner in one transaction.
func (s *Store) DeleteKeysOf(_ context.Context, owner keystore.Owner) ([]keystore.Key, error) {
	var removed []keystore.Key
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if removed, err = keysOf(tx, owner); err != nil {
			return err
		}
		for _, k := range removed {
			if err := deleteKey(tx, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}

// TouchKeys raises last_used for each id in one transaction.
func (s *Store) TouchKeys(_ context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bucketKeys)
		for id, t := range lastUsed {
			v := keys.Get([]byte(id))
			if v == nil {
				continue // deleted since it was used
			}
			k, err := keystore.UnmarshalKey(id, v)
			if err != nil {
				return err
			}
			if t = t.Truncate(time.Microsecond); t.After(k.LastUsed) {
				k.LastUsed = t
				if err := keys.Put([]byte(id), keystore.MarshalKey(k)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
