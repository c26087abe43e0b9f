package boltstore

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// UpdateCredits applies fn to the credit account id in one transaction.
func (s *Store) UpdateCredits(_ context.Context, id string, fn func(*keystore.CreditAccount, bool) error) (keystore.CreditAccount, error) {
	var a keystore.CreditAccount
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCredits)
		exists := false
		a = keystore.CreditAccount{ID: id}
		if v := b.Get([]byte(id)); v != nil {
			var err error
			if a, err = keystore.UnmarshalCreditAccount(id, v); err != nil {
				return err
			}
			exists = true
		}
		if err := fn(&a, exists); err != nil {
			return err
		}
		a.ID = id
		v, err := keystore.MarshalCreditAccount(a)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), v)
	})
	return a, err
}

// CreditAccount returns the credit account id.
func (s *Store) CreditAccount(_ context.Context, id string) (keystore.CreditAccount, error) {
	var a keystore.CreditAccount
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCredits).Get([]byte(id))
		if v == nil {
			return keystore.ErrNotFound
		}
		var err error
		a, err = keystore.UnmarshalCreditAccount(id, v)
		return err
	})
	return a, err
}

// CreditAccounts returns every credit account, by id.
func (s *Store) CreditAccounts(_ context.Context) ([]keystore.CreditAccount, error) {
	var out []keystore.CreditAccount
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCredits).ForEach(func(k, v []byte) error {
			a, err := keystore.UnmarshalCreditAccount(string(k), v)
			out = append(out, a)
			return err
		})
	})
	return out, err
}
