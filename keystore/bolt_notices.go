package keystore

import (
	"bytes"
	"context"

	bolt "go.etcd.io/bbolt"
)

// noticeKey is a notice's key in its bucket: endpoint 0x00 id.
func noticeKey(endpoint, id string) []byte {
	return append(append([]byte(endpoint), 0), id...)
}

// AddNotices stores the notices not stored yet, in one transaction.
func (s *BoltStore) AddNotices(_ context.Context, notices []Notice) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNotices)
		for _, n := range notices {
			k := noticeKey(n.Endpoint, n.ID)
			if b.Get(k) != nil {
				continue
			}
			v, err := MarshalNotice(n)
			if err != nil {
				return err
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Notices lists the notices of an endpoint.
func (s *BoltStore) Notices(_ context.Context, endpoint string) ([]Notice, error) {
	var out []Notice
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := noticeKey(endpoint, "")
		c := tx.Bucket(bucketNotices).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			n, err := UnmarshalNotice(endpoint, string(k[len(prefix):]), v)
			if err != nil {
				return err
			}
			out = append(out, n)
		}
		return nil
	})
	return out, err
}

// UpdateNotice applies fn to a notice in one transaction.
func (s *BoltStore) UpdateNotice(_ context.Context, endpoint, id string, fn func(*Notice) error) (Notice, error) {
	var n Notice
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNotices)
		k := noticeKey(endpoint, id)
		v := b.Get(k)
		if v == nil {
			return ErrNotFound
		}
		var err error
		if n, err = UnmarshalNotice(endpoint, id, v); err != nil {
			return err
		}
		if err := fn(&n); err != nil {
			return err
		}
		if v, err = MarshalNotice(n); err != nil {
			return err
		}
		return b.Put(k, v)
	})
	return n, err
}

// DeleteNotice removes a notice.
func (s *BoltStore) DeleteNotice(_ context.Context, endpoint, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNotices).Delete(noticeKey(endpoint, id))
	})
}

var _ NoticeStore = (*BoltStore)(nil)
