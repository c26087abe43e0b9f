package boltstore

import (
	"bytes"
	"context"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// noticeKey is a notice's key in its buckets: endpoint 0x00 id.
func noticeKey(endpoint, id string) []byte {
	return append(append([]byte(endpoint), 0), id...)
}

// AddNotices stores the notices not stored yet, in one transaction.
func (s *Store) AddNotices(_ context.Context, notices []keystore.Notice) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		pending, done := tx.Bucket(bucketNotices), tx.Bucket(bucketNoticesDone)
		for _, n := range notices {
			k := noticeKey(n.Endpoint, n.ID)
			if pending.Get(k) != nil || done.Get(k) != nil {
				continue
			}
			v, err := keystore.MarshalNotice(n)
			if err != nil {
				return err
			}
			if err := pending.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Notices lists the pending notices of an endpoint.
func (s *Store) Notices(_ context.Context, endpoint string) ([]keystore.Notice, error) {
	var out []keystore.Notice
	err := s.db.View(func(tx *bolt.Tx) error {
		return forEachNotice(tx.Bucket(bucketNotices), endpoint, func(_ []byte, n keystore.Notice) error {
			out = append(out, n)
			return nil
		})
	})
	return out, err
}

// forEachNotice calls fn for each notice of endpoint in bucket b.
func forEachNotice(b *bolt.Bucket, endpoint string, fn func(key []byte, n keystore.Notice) error) error {
	prefix := noticeKey(endpoint, "")
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		n, err := keystore.UnmarshalNotice(endpoint, string(k[len(prefix):]), v)
		if err != nil {
			return err
		}
		if err := fn(k, n); err != nil {
			return err
		}
	}
	return nil
}

// UpdateNotice applies fn to a pending notice in one transaction; a
// notice it marks done moves to the done bucket.
func (s *Store) UpdateNotice(_ context.Context, endpoint, id string, fn func(*keystore.Notice) error) (keystore.Notice, error) {
	var n keystore.Notice
	err := s.db.Update(func(tx *bolt.Tx) error {
		pending := tx.Bucket(bucketNotices)
		k := noticeKey(endpoint, id)
		v := pending.Get(k)
		if v == nil {
			return keystore.ErrNotFound
		}
		var err error
		if n, err = keystore.UnmarshalNotice(endpoint, id, v); err != nil {
			return err
		}
		if err := fn(&n); err != nil {
			return err
		}
		if v, err = keystore.MarshalNotice(n); err != nil {
			return err
		}
		if n.Done.IsZero() {
			return pending.Put(k, v)
		}
		if err := pending.Delete(k); err != nil {
			return err
		}
		return tx.Bucket(bucketNoticesDone).Put(k, v)
	})
	return n, err
}

// PruneNotices forgets the endpoint's done notices kept past KeepUntil.
func (s *Store) PruneNotices(_ context.Context, endpoint string, now time.Time) (int, error) {
	pruned := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		done := tx.Bucket(bucketNoticesDone)
		var old [][]byte
		err := forEachNotice(done, endpoint, func(k []byte, n keystore.Notice) error {
			if n.KeepUntil.Before(now) {
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := done.Delete(k); err != nil {
				return err
			}
		}
		pruned = len(old)
		return nil
	})
	return pruned, err
}

var _ keystore.NoticeStore = (*Store)(nil)

// PendingNotices lists the pending notices of every endpoint, for copies
// of the store (restore, migrate).
func (s *Store) PendingNotices(context.Context) ([]keystore.Notice, error) {
	var out []keystore.Notice
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNotices).ForEach(func(k, v []byte) error {
			endpoint, id, _ := bytes.Cut(k, []byte{0})
			n, err := keystore.UnmarshalNotice(string(endpoint), string(id), v)
			out = append(out, n)
			return err
		})
	})
	return out, err
}
