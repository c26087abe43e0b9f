package keystore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

func ownerPrefix(owner Owner) []byte { return append([]byte(owner.Encode()), 0) }

func ownerIndexKey(k Key) []byte {
	owner := k.Owner.Encode()
	b := make([]byte, 0, len(owner)+1+8+len(k.ID))
	b = append(b, owner...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(micros(k.Created)))
	return append(b, k.ID...)
}

// CreateKey stores k. It returns once the transaction holding k is
// committed and synced; concurrent calls share that transaction.
func (s *BoltStore) CreateKey(ctx context.Context, k Key, opts CreateOptions) error {
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

func (s *BoltStore) writeCreates() {
	defer close(s.writerDone)
	linger := time.NewTimer(lingerMax)
	linger.Stop()
	last := 0 // requests in the previous commit
	skip := 0 // commits to make without waiting, after a wait that gained nothing
	// The batch's array is reused: a commit is done with it when it
	// returns.
	var batch []createRequest
	for {
		clear(batch) // the array keeps no committed request alive
		batch = s.drain(batch[:0])
		queued := len(batch) // came while the previous commit was written
		if queued == 0 {
			select {
			case <-s.quit:
				return
			case first := <-s.creates:
				batch = s.drain(append(batch, first))
			}
		}
		switch until := commitTarget(last, queued); {
		case skip > 0:
			skip--
		case len(batch) < until:
			var gained bool
			if batch, gained = s.gather(batch, until, linger); !gained {
				// The clients expected did not come back at once
				// (they pause between mints): waiting only delays.
				skip = lingerBackoff
			}
		}
		last = len(batch)
		s.commitCreates(batch)
	}
}

// commitTarget returns how many requests a group commit should hold
// before it is written, given the previous commit's size and how many
// requests came while that one was being written; with fewer, it waits for
// more (gather). Each commit costs two fsyncs and the pages of every index
// it touches, whatever it holds, so under load fewer, fuller commits cost
// less CPU per key.
//
// The clients the previous commit answered are about to mint again, and
// those queued meanwhile are others: together, about how many clients are
// minting. Waiting for them all merges clients that would otherwise
// alternate between two half-full commits (with 64 clients, about 30 keys
// a commit instead of 64). A lone request, or a few, is not held back;
// nor is the rest of a commit whose clients are all in.
func commitTarget(last, queued int) int {
	if last < lingerAfter {
		return 0
	}
	return min(last+queued, lingerUntil)
}

// drain adds the requests waiting now to batch.
func (s *BoltStore) drain(batch []createRequest) []createRequest {
	for len(batch) < maxCommitBatch {
		select {
		case req := <-s.creates:
			batch = append(batch, req)
		default:
			return batch
		}
	}
	return batch
}

// gather adds requests to batch as they come, until it holds until, none
// has come for lingerGap or lingerMax has passed, and reports whether any
// came. timer is left stopped.
func (s *BoltStore) gather(batch []createRequest, until int, timer *time.Timer) ([]createRequest, bool) {
	drained := len(batch)
	deadline := time.Now().Add(lingerMax)
	timer.Reset(lingerGap)
	defer timer.Stop()
	for len(batch) < until {
		select {
		case req := <-s.creates:
			batch = append(batch, req)
			timer.Reset(min(lingerGap, time.Until(deadline)))
		case <-timer.C:
			return batch, len(batch) > drained
		}
	}
	return batch, true
}

// commitCreates writes a batch in one transaction. A duplicate or a limit
// fails only its own request; a failed commit fails them all.
func (s *BoltStore) commitCreates(batch []createRequest) {
	results := make([]error, len(batch))
	err := s.db.Update(func(tx *bolt.Tx) error {
		// Ids grow with time, so new records append to the keys bucket;
		// full pages suit appends (bbolt's default, half-full, suits
		// random inserts, as into the hash index).
		tx.Bucket(bucketKeys).FillPercent = 0.95
		present := newPresence(tx)
		var indexed []int // the batch's digests, put in order at the end
		for i, req := range batch {
			if results[i] = present.checkCreate(req.key, req.at, req.opts); results[i] != nil {
				continue
			}
			if slices.ContainsFunc(indexed, func(j int) bool { return batch[j].key.Hash == req.key.Hash }) {
				results[i] = ErrExists // a digest not in the index yet
				continue
			}
			// Requests of one batch see each other's ids and owner
			// entries (limits) in the transaction, and digests above.
			if err := putKeyRecord(tx, req.key, req.val); err != nil {
				return err
			}
			indexed = append(indexed, i)
		}
		// In order, the inserts walk each index once from left to right:
		// stamped digests append at its end, others land where they
		// fall.
		type put struct {
			at digestEntry
			id string
		}
		puts := make([]put, len(indexed))
		for j, i := range indexed {
			puts[j] = put{batch[i].at, batch[i].key.ID}
		}
		slices.SortFunc(puts, func(a, b put) int {
			return cmp.Or(bytes.Compare(a.at.bucket, b.at.bucket), bytes.Compare(a.at.key, b.at.key))
		})
		tx.Bucket(bucketStamped).FillPercent = 0.95 // appends
		for _, p := range puts {
			if err := tx.Bucket(p.at.bucket).Put(p.at.key, []byte(p.id)); err != nil {
				return err
			}
		}
		return nil
	})
	for i, req := range batch {
		if err != nil {
			req.done <- err
		} else {
			req.done <- results[i]
		}
	}
}

func checkCreate(tx *bolt.Tx, k Key, opts CreateOptions) error {
	return newPresence(tx).checkCreate(k, digestEntryOf(k), opts)
}

// checkCreate is the package's checkCreate for a key indexed at at, with
// p's cursors.
func (p *presence) checkCreate(k Key, at digestEntry, opts CreateOptions) error {
	if holds(p.keys, []byte(k.ID)) || p.digestTaken(k, at) {
		return ErrExists
	}
	if opts.StoredUser && (k.Owner.Source != SourcePassword || p.tx.Bucket(bucketUsers).Get([]byte(k.Owner.Name)) == nil) {
		return ErrUnknownOwner
	}
	return checkLimit(p.tx, k.Owner, opts.MaxPerOwner)
}

// A digestEntry is where a key's digest is indexed: a stamped key's under
// its stamp and digest, so that new keys append to the index; any other
// key's under its digest alone.
type digestEntry struct {
	bucket, key []byte
}

func digestEntryOf(k Key) digestEntry {
	if k.Stamped && len(k.ID) >= StampLen {
		return digestEntry{bucketStamped, stampedDigest(k.ID[:StampLen], k.Hash)}
	}
	h := k.Hash // a copy: a slice of k.Hash would keep all of k on the heap
	return digestEntry{bucketHashes, h[:]}
}

func stampedDigest(stamp string, h Hash) []byte {
	return append(append(make([]byte, 0, len(stamp)+len(h)), stamp...), h[:]...)
}

// digestTaken reports whether k's digest names a stored key. A stamped
// key's text determines its stamp (Key.Stamped), so its digest can only
// be taken under that stamp, or in the unstamped index by a key brought in
// before stamps. A key that is not stamped (only a migration brings one
// in) may share its digest with a stamped key under any stamp: the
// stamped index is walked for it.
func (p *presence) digestTaken(k Key, at digestEntry) bool {
	if holds(p.hashes, k.Hash[:]) {
		return true
	}
	if bytes.Equal(at.bucket, bucketStamped) {
		return holds(p.stamped, at.key)
	}
	return len(scanStamped(p.tx, map[Hash]int{k.Hash: 0})) > 0
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
func checkLimit(tx *bolt.Tx, owner Owner, maxPerOwner int) error {
	if maxPerOwner <= 0 {
		return nil
	}
	n := 0
	prefix := ownerPrefix(owner)
	c := tx.Bucket(bucketOwners).Cursor()
	for ik, _ := c.Seek(prefix); ik != nil && bytes.HasPrefix(ik, prefix); ik, _ = c.Next() {
		if n++; n >= maxPerOwner {
			return ErrLimit
		}
	}
	return nil
}

// keysOf reads owner's keys, oldest first. The index is searched by the
// owner's stored form; entries of other owners whose names, as stores
// that did not check names kept them, share that prefix are skipped.
func keysOf(tx *bolt.Tx, owner Owner) ([]Key, error) {
	var out []Key
	prefix := ownerPrefix(owner)
	c := tx.Bucket(bucketOwners).Cursor()
	for ik, _ := c.Seek(prefix); ik != nil && bytes.HasPrefix(ik, prefix); ik, _ = c.Next() {
		if len(ik) < len(prefix)+8 {
			continue
		}
		k, err := getKey(tx, ik[len(prefix)+8:])
		if errors.Is(err, ErrNotFound) {
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

func putKey(tx *bolt.Tx, k Key, val []byte) error {
	if err := putKeyRecord(tx, k, val); err != nil {
		return err
	}
	at := digestEntryOf(k)
	return tx.Bucket(at.bucket).Put(at.key, []byte(k.ID))
}

// putKeyRecord writes k's record and its owner index entry, not its
// digest.
func putKeyRecord(tx *bolt.Tx, k Key, val []byte) error {
	if val == nil {
		val = encodeKey(k)
	}
	if err := tx.Bucket(bucketKeys).Put([]byte(k.ID), val); err != nil {
		return err
	}
	return tx.Bucket(bucketOwners).Put(ownerIndexKey(k), nil)
}

func deleteKey(tx *bolt.Tx, k Key) error {
	if err := tx.Bucket(bucketKeys).Delete([]byte(k.ID)); err != nil {
		return err
	}
	at := digestEntryOf(k)
	if err := tx.Bucket(at.bucket).Delete(at.key); err != nil {
		return err
	}
	return tx.Bucket(bucketOwners).Delete(ownerIndexKey(k))
}

func getKey(tx *bolt.Tx, id []byte) (Key, error) {
	v := tx.Bucket(bucketKeys).Get(id)
	if v == nil {
		return Key{}, ErrNotFound
	}
	return decodeKey(id, v)
}

// KeyByHash returns the key whose digest is h. With its text's stamp, a
// stamped key is one index read away; without, as for a digest an
// operator sends, the stamped index is walked (21 ns per key,
// BenchmarkDigestOnlyLookup: about 21 ms at 10⁶ keys).
func (s *BoltStore) KeyByHash(_ context.Context, h Hash, stamp string) (Key, error) {
	var k Key
	err := s.db.View(func(tx *bolt.Tx) error {
		id := lookupDigest(tx, h, stamp)
		if id == nil && stamp == "" {
			id = scanStamped(tx, map[Hash]int{h: 0})[0]
		}
		if id == nil {
			return ErrNotFound
		}
		var err error
		k, err = getKey(tx, id)
		return err
	})
	return k, err
}

// KeysByHash returns the key each digest names, a zero Key where none,
// scanning the stamped index at most once for all of them.
func (s *BoltStore) KeysByHash(_ context.Context, hs []Hash) ([]Key, error) {
	out := make([]Key, len(hs))
	err := s.db.View(func(tx *bolt.Tx) error {
		ids := make([][]byte, len(hs))
		rest := map[Hash]int{}
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
			if errors.Is(err, ErrNotFound) {
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
			if j := slices.IndexFunc(out, func(k Key) bool { return k.ID != "" && k.Hash == h }); j >= 0 {
				out[i] = out[j]
			}
		}
	}
	return out, nil
}

// lookupDigest reads the id indexed under h: with stamp, in the stamped
// index, and in the unstamped one.
func lookupDigest(tx *bolt.Tx, h Hash, stamp string) []byte {
	if len(stamp) == StampLen {
		if id := tx.Bucket(bucketStamped).Get(stampedDigest(stamp, h)); id != nil {
			return id
		}
	}
	return tx.Bucket(bucketHashes).Get(h[:])
}

// scanStamped walks the stamped index once and returns, by position, the
// ids of the digests in want, copied out of the transaction.
func scanStamped(tx *bolt.Tx, want map[Hash]int) map[int][]byte {
	found := make(map[int][]byte, len(want))
	if len(want) == 0 {
		return found
	}
	c := tx.Bucket(bucketStamped).Cursor()
	for k, v := c.First(); k != nil && len(found) < len(want); k, v = c.Next() {
		if len(k) != StampLen+len(Hash{}) {
			continue
		}
		if i, ok := want[Hash(k[StampLen:])]; ok {
			found[i] = bytes.Clone(v)
		}
	}
	return found
}

// KeyByID returns the key with the given id.
func (s *BoltStore) KeyByID(_ context.Context, id string) (Key, error) {
	var k Key
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		k, err = getKey(tx, []byte(id))
		return err
	})
	return k, err
}

// KeysByOwner returns owner's keys, oldest first.
func (s *BoltStore) KeysByOwner(_ context.Context, owner Owner) ([]Key, error) {
	var out []Key
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = keysOf(tx, owner)
		return err
	})
	return out, err
}

// Keys returns every key, oldest first.
func (s *BoltStore) Keys(_ context.Context) ([]Key, error) {
	var out []Key
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(id, v []byte) error {
			k, err := decodeKey(id, v)
			out = append(out, k)
			return err
		})
	})
	slices.SortStableFunc(out, func(a, b Key) int { return a.Created.Compare(b.Created) })
	return out, err
}

// UpdateKey applies fn to the key with the given id.
func (s *BoltStore) UpdateKey(_ context.Context, id string, fn func(*Key) error) (Key, error) {
	var k Key
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
		return tx.Bucket(bucketKeys).Put([]byte(id), encodeKey(k))
	})
	return k, err
}

// RotateKey stores next and retires oldID in one transaction.
func (s *BoltStore) RotateKey(_ context.Context, oldID string, next Key, retireAt time.Time, maxPerOwner int) (Key, error) {
	var old Key
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if old, err = getKey(tx, []byte(oldID)); err != nil {
			return err
		}
		if err := CheckRotatable(old); err != nil {
			return err
		}
		if err := checkCreate(tx, next, CreateOptions{}); err != nil {
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
		return tx.Bucket(bucketKeys).Put([]byte(old.ID), encodeKey(Retired(old, retireAt)))
	})
	return old, err
}

// DeleteKey removes the key with the given id and returns what it was.
func (s *BoltStore) DeleteKey(_ context.Context, id string) (Key, error) {
	var k Key
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
func (s *BoltStore) DeleteKeysOf(_ context.Context, owner Owner) ([]Key, error) {
	var removed []Key
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
func (s *BoltStore) TouchKeys(_ context.Context, lastUsed map[string]time.Time) error {
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
			k, err := decodeKey([]byte(id), v)
			if err != nil {
				return err
			}
			if t = t.Truncate(time.Microsecond); t.After(k.LastUsed) {
				k.LastUsed = t
				if err := keys.Put([]byte(id), encodeKey(k)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
