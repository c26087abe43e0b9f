package keystore

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

// UpdateCredits applies fn to the credit account id in one transaction.
func (s *BoltStore) UpdateCredits(_ context.Context, id string, fn func(*CreditAccount, bool) error) (CreditAccount, error) {
	var a CreditAccount
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCredits)
		exists := false
		a = CreditAccount{ID: id}
		if v := b.Get([]byte(id)); v != nil {
			var err error
			if a, err = UnmarshalCreditAccount(id, v); err != nil {
				return err
			}
			exists = true
		}
		if err := fn(&a, exists); err != nil {
			return err
		}
		a.ID = id
		v, err := MarshalCreditAccount(a)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), v)
	})
	return a, err
}

// CreditAccount returns the credit account id.
func (s *BoltStore) CreditAccount(_ context.Context, id string) (CreditAccount, error) {
	var a CreditAccount
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCredits).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		var err error
		a, err = UnmarshalCreditAccount(id, v)
		return err
	})
	return a, err
}

// CreditAccounts returns every credit account, by id.
func (s *BoltStore) CreditAccounts(_ context.Context) ([]CreditAccount, error) {
	var out []CreditAccount
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCredits).ForEach(func(k, v []byte) error {
			a, err := UnmarshalCreditAccount(string(k), v)
			out = append(out, a)
			return err
		})
	})
	return out, err
}
