package ops

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Copied counts what Copy did.
type Copied struct {
	UsersCopied  int `json:"users_copied"`
	UsersPresent int `json:"users_already_present"`
	KeysCopied   int `json:"keys_copied"`
	KeysPresent  int `json:"keys_already_present"`
	// Credit balances copied, and already in the destination.
	CreditsCopied  int `json:"credit_balances_copied,omitempty"`
	CreditsPresent int `json:"credit_balances_already_present,omitempty"`
	// KeysOrphaned counts keys of password users that the destination
	// has neither in its config nor in its store: they are refused there
	// until those users exist.
	KeysOrphaned int `json:"keys_orphaned,omitempty"`
	// NoticesCopied counts pending notices copied (a restore's).
	NoticesCopied int      `json:"notices_copied,omitempty"`
	Orphans       []string `json:"orphaned_users,omitempty"`
}

// copyWorkers is how many keys are copied at once: a remote store answers
// each write in a round trip.
const copyWorkers = 16

// Copy copies every stored user, key and credit balance of src into dst,
// leaving those dst already has (so it can be run again), and counts the
// keys of password users that dst has neither in dstUsers (its config's)
// nor in its store. Only digests are copied, so keys keep working.
func Copy(ctx context.Context, src, dst keystore.Store, dstUsers []string) (Copied, error) {
	var m Copied
	users, err := src.Users(ctx)
	if err != nil {
		return m, fmt.Errorf("reading users: %w", err)
	}
	for _, u := range users {
		switch err := dst.CreateUser(ctx, u); {
		case errors.Is(err, keystore.ErrExists):
			m.UsersPresent++
		case err != nil:
			return m, fmt.Errorf("user %s: %w", u.Name, err)
		default:
			m.UsersCopied++
		}
	}
	keys, err := src.Keys(ctx)
	if err != nil {
		return m, fmt.Errorf("reading keys: %w", err)
	}
	if err := copyKeys(ctx, keys, dst, &m); err != nil {
		return m, err
	}
	if err := copyCredits(ctx, src, dst, &m); err != nil {
		return m, err
	}
	return m, countOrphans(ctx, keys, dst, dstUsers, &m)
}

// copyKeys creates keys in dst, copyWorkers at a time.
func copyKeys(ctx context.Context, keys []keystore.Key, dst keystore.Store, m *Copied) error {
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan keystore.Key)
	)
	for range copyWorkers {
		wg.Go(func() {
			for k := range next {
				err := dst.CreateKey(ctx, k, keystore.CreateOptions{})
				mu.Lock()
				switch {
				case errors.Is(err, keystore.ErrExists):
					m.KeysPresent++
				case err != nil:
					firstErr = cmp.Or(firstErr, fmt.Errorf("key %s: %w", k.ID, err))
				default:
					m.KeysCopied++
				}
				mu.Unlock()
			}
		})
	}
	for _, k := range keys {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- k
	}
	close(next)
	wg.Wait()
	return firstErr
}

// errPresent stops a copy of a credit account the destination has.
var errPresent = errors.New("already present")

// copyCredits copies every credit balance of src that dst does not have.
func copyCredits(ctx context.Context, src, dst keystore.Store, m *Copied) error {
	accounts, err := src.CreditAccounts(ctx)
	if err != nil {
		return fmt.Errorf("reading credit balances: %w", err)
	}
	for _, a := range accounts {
		_, err := dst.UpdateCredits(ctx, a.ID, func(d *keystore.CreditAccount, exists bool) error {
			if exists {
				return errPresent
			}
			*d = a
			return nil
		})
		switch {
		case errors.Is(err, errPresent):
			m.CreditsPresent++
		case err != nil:
			return fmt.Errorf("credit balance %s: %w", a.ID, err)
		default:
			m.CreditsCopied++
		}
	}
	return nil
}

// countOrphans counts the keys of password users dst does not know.
func countOrphans(ctx context.Context, keys []keystore.Key, dst keystore.Store, dstUsers []string, m *Copied) error {
	known := make(map[string]bool)
	for _, name := range dstUsers {
		known[name] = true
	}
	for _, k := range keys {
		if k.Owner.Source != keystore.SourcePassword {
			continue
		}
		name := k.Owner.Name
		if _, checked := known[name]; !checked {
			_, err := dst.User(ctx, name)
			if err != nil && !errors.Is(err, keystore.ErrNotFound) {
				return fmt.Errorf("looking up user %s: %w", name, err)
			}
			known[name] = err == nil
			if err != nil {
				m.Orphans = append(m.Orphans, name)
			}
		}
		if !known[name] {
			m.KeysOrphaned++
		}
	}
	slices.Sort(m.Orphans)
	return nil
}

// pendingNotices is a store that lists the notices of every endpoint.
type pendingNotices interface {
	PendingNotices(ctx context.Context) ([]keystore.Notice, error)
}

// Restore copies a backup, opened as the store src, into dst: its users,
// keys, credit balances (as they were when it was taken) and pending
// notices. dst must hold no keys, users or credit accounts unless replace
// is set; then what it has is kept and what the backup has beside it is
// added (Copy leaves records dst already has).
func Restore(ctx context.Context, src, dst keystore.Store, dstUsers []string, replace bool) (Copied, error) {
	if !replace {
		if err := refuseRecords(ctx, dst); err != nil {
			return Copied{}, err
		}
	}
	m, err := Copy(ctx, src, dst, dstUsers)
	if err != nil {
		return m, err
	}
	from, ok1 := src.(pendingNotices)
	to, ok2 := dst.(keystore.NoticeStore)
	if !ok1 || !ok2 {
		return m, nil
	}
	notices, err := from.PendingNotices(ctx)
	if err == nil && len(notices) > 0 {
		err = to.AddNotices(ctx, notices)
	}
	if err != nil {
		return m, fmt.Errorf("notices: %w", err)
	}
	m.NoticesCopied = len(notices)
	return m, nil
}

// refuseRecords fails unless dst holds no keys, users or credit accounts.
func refuseRecords(ctx context.Context, dst keystore.Store) error {
	keys, err := dst.Keys(ctx)
	if err != nil {
		return err
	}
	users, err := dst.Users(ctx)
	if err != nil {
		return err
	}
	credits, err := dst.CreditAccounts(ctx)
	if err != nil {
		return err
	}
	if len(keys)+len(users)+len(credits) > 0 {
		return fmt.Errorf("the destination holds %d keys, %d users and %d credit accounts: restore into an empty store, or pass --force to add the backup's records beside them", len(keys), len(users), len(credits))
	}
	return nil
}
