package keystore

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

type userRecord struct {
	PasswordHash string   `json:"password_hash"`
	Created      int64    `json:"created"`
	Scopes       []string `json:"scopes,omitempty"`
	Plan         string   `json:"plan,omitempty"`
}

func decodeUser(name, v []byte) (User, error) {
	var r userRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return User{}, fmt.Errorf("corrupt user record %q: %w", name, err)
	}
	return User{Name: string(name), PasswordHash: r.PasswordHash, Created: fromMicros(r.Created), Scopes: r.Scopes, Plan: r.Plan}, nil
}

func putUser(tx *bolt.Tx, u User) error {
	val, err := MarshalUser(u)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketUsers).Put([]byte(u.Name), val)
}

// User returns the stored user name.
func (s *BoltStore) User(_ context.Context, name string) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		var err error
		u, err = decodeUser([]byte(name), v)
		return err
	})
	return u, err
}

// Users returns every stored user, by name.
func (s *BoltStore) Users(_ context.Context) ([]User, error) {
	var out []User
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			u, err := decodeUser(k, v)
			out = append(out, u)
			return err
		})
	})
	return out, err
}

// CreateUser adds a user, or returns ErrExists.
func (s *BoltStore) CreateUser(_ context.Context, u User) error {
	if err := CheckName(u.Name); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketUsers).Get([]byte(u.Name)) != nil {
			return ErrExists
		}
		return putUser(tx, u)
	})
}

// UpdateUser applies fn to the stored user name.
func (s *BoltStore) UpdateUser(_ context.Context, name string, fn func(*User) error) (User, error) {
	var u User
	err := s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		var err error
		if u, err = decodeUser([]byte(name), v); err != nil {
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
func (s *BoltStore) DeleteUser(_ context.Context, name string) ([]Key, error) {
	var removed []Key
	err := s.db.Update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		if users.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		var err error
		if removed, err = keysOf(tx, PasswordUser(name)); err != nil {
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
