package boltstore

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func putUser(tx *bolt.Tx, u keystore.User) error {
	val, err := keystore.MarshalUser(u)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketUsers).Put([]byte(u.Name), val)
}

// User returns the stored user name.
func (s *Store) User(_ context.Context, name string) (keystore.User, error) {
	var u keystore.User
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(name))
		if v == nil {
			return keystore.ErrNotFound
		}
		var err error
		u, err = keystore.UnmarshalUser(name, v)
		return err
	})
	return u, err
}

// Users returns every stored user, by name.
func (s *Store) Users(_ context.Context) ([]keystore.User, error) {
	var out []keystore.User
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			u, err := keystore.UnmarshalUser(string(k), v)
			out = append(out, u)
			return err
		})
	})
	return out, err
}

// CreateUser adds a user, or returns ErrExists.
func (s *Store) CreateUser(_ context.Context, u keystore.User) error {
	if err := keystore.CheckName(u.Name); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketUsers).Get([]byte(u.Name)) != nil {
			return keystore.ErrExists
		}
		return putUser(tx, u)
	})
}

// UpdateUser applies fn to the stored user name.
func (s *Store) UpdateUser(_ context.Context, name string, fn func(*keystore.User) error) (keystore.User, error) {
	var u keystore.User
	err := s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(name))
		if v == nil {
			return keystore.ErrNotFound
		}
		var err error
		if u, err = keystore.UnmarshalUser(name, v); err != nil {
			return err
		}
		fixed := u
		if err := fn(&u); err != nil {
			return err
		}
		u.Name, u.Created = fixed.Name, fixed.Created
		return putUser(tx, u)
	})
	return u, err
}

// DeleteUser removes a user and all their keys in one transaction.
func (s *Store) DeleteUser(_ context.Context, name string) ([]keystore.Key, error) {
	var removed []keystore.Key
	err := s.db.Update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		if users.Get([]byte(name)) == nil {
			return keystore.ErrNotFound
		}
		var err error
		if removed, err = keysOf(tx, keystore.PasswordUser(name)); err != nil {
			return err
		}
		for _, k := range removed {
			if err := deleteKey(tx, k); err != nil {
				return err
			}
		}
		return users.Delete([]byte(name))
	})
	return removed, err
}
