package keystore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// memStore is the Store and NoticeStore that keystore's own tests run
// over, so that they need no backend (the backends import keystore): its
// records, in the stored forms of codec.go, sit in maps under one mutex,
// which makes every operation atomic. With a path, it writes them all to
// that file after every change and reads them when opened, so that a
// test killing its process with -9 finds what was written. It passes
// storetest (conformance_test.go).
type memStore struct {
	mu     sync.Mutex
	path   string
	closed bool
	data   memRecords
}

// memRecords are a memStore's records, by name.
type memRecords struct {
	Keys    map[string][]byte            // id -> key record
	Users   map[string][]byte            // name -> user record
	Credits map[string][]byte            // account id -> credit account
	Pending map[string]map[string][]byte // endpoint -> event id -> notice
	Done    map[string]map[string][]byte // the same, for done notices

	hashes map[Hash]string // digest -> id, of Keys; not saved
}

var errMemClosed = errors.New("test store is closed")

func newMemRecords() memRecords {
	return memRecords{Keys: map[string][]byte{}, Users: map[string][]byte{}, Credits: map[string][]byte{},
		Pending: map[string]map[string][]byte{}, Done: map[string]map[string][]byte{}, hashes: map[Hash]string{}}
}

// putKey stores k's record and indexes its digest.
func (d *memRecords) putKey(k Key) {
	d.Keys[k.ID] = MarshalKey(k)
	d.hashes[k.Hash] = k.ID
}

// deleteKey removes k's record and its digest.
func (d *memRecords) deleteKey(k Key) {
	delete(d.Keys, k.ID)
	delete(d.hashes, k.Hash)
}

// openFileStore opens the memStore kept in the file at path.
func openFileStore(path string) (*memStore, error) {
	s := &memStore{path: path, data: newMemRecords()}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &s.data)
	}
	for id, v := range s.data.Keys {
		k, kerr := UnmarshalKey(id, v)
		err = cmp.Or(err, kerr)
		s.data.hashes[k.Hash] = id
	}
	return s, err
}

// openTestStore returns a memStore kept in a file, closed when t ends.
// Like a real store, it syncs every write before it returns, which also
// keeps the tests' timing a real store's.
func openTestStore(t testing.TB) *memStore {
	s, err := openFileStore(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// update runs fn on the records under the lock and, if it succeeds,
// saves them.
func (s *memStore) update(fn func(d *memRecords) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errMemClosed
	}
	if err := fn(&s.data); err != nil {
		return err
	}
	if s.path == "" {
		return nil
	}
	b, err := json.Marshal(s.data)
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

// view runs fn on the records under the lock.
func (s *memStore) view(fn func(d *memRecords) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errMemClosed
	}
	return fn(&s.data)
}

func (d *memRecords) key(id string) (Key, error) {
	v, ok := d.Keys[id]
	if !ok {
		return Key{}, ErrNotFound
	}
	return UnmarshalKey(id, v)
}

// all returns the keys that keep, oldest first (by id when created at
// once), as the bbolt store's indexes order them.
func (d *memRecords) all(keep func(Key) bool) ([]Key, error) {
	var out []Key
	for id, v := range d.Keys {
		k, err := UnmarshalKey(id, v)
		if err != nil {
			return nil, err
		}
		if keep(k) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b Key) int { return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

func (d *memRecords) byHash(h Hash) (Key, bool, error) {
	id, ok := d.hashes[h]
	if !ok {
		return Key{}, false, nil
	}
	k, err := d.key(id)
	return k, err == nil, err
}

func (d *memRecords) checkCreate(k Key, opts CreateOptions) error {
	if _, taken := d.Keys[k.ID]; taken {
		return ErrExists
	}
	if _, taken, err := d.byHash(k.Hash); taken || err != nil {
		return cmp.Or(err, ErrExists)
	}
	if opts.StoredUser {
		if _, ok := d.Users[k.Owner.Name]; !ok || k.Owner.Source != SourcePassword {
			return ErrUnknownOwner
		}
	}
	return d.checkLimit(k.Owner, opts.MaxPerOwner)
}

func (d *memRecords) checkLimit(owner Owner, maxPerOwner int) error {
	if maxPerOwner <= 0 {
		return nil
	}
	held, err := d.all(func(k Key) bool { return k.Owner == owner })
	if err == nil && len(held) >= maxPerOwner {
		err = ErrLimit
	}
	return err
}

func (d *memRecords) removeKeysOf(owner Owner) ([]Key, error) {
	keys, err := d.all(func(k Key) bool { return k.Owner == owner })
	for _, k := range keys {
		d.deleteKey(k)
	}
	return keys, err
}

func (s *memStore) CreateKey(ctx context.Context, k Key, opts CreateOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(func(d *memRecords) error {
		if err := d.checkCreate(k, opts); err != nil {
			return err
		}
		d.putKey(k)
		return nil
	})
}

func (s *memStore) KeyByHash(_ context.Context, h Hash, _ string) (Key, error) {
	var k Key
	err := s.view(func(d *memRecords) error {
		var found bool
		var err error
		if k, found, err = d.byHash(h); err == nil && !found {
			err = ErrNotFound
		}
		return err
	})
	return k, err
}

func (s *memStore) KeysByHash(_ context.Context, hs []Hash) ([]Key, error) {
	out := make([]Key, len(hs))
	err := s.view(func(d *memRecords) error {
		for i, h := range hs {
			var err error
			if out[i], _, err = d.byHash(h); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

func (s *memStore) KeyByID(_ context.Context, id string) (Key, error) {
	var k Key
	err := s.view(func(d *memRecords) error {
		var err error
		k, err = d.key(id)
		return err
	})
	return k, err
}

func (s *memStore) KeysByOwner(_ context.Context, owner Owner) ([]Key, error) {
	var out []Key
	err := s.view(func(d *memRecords) error {
		var err error
		out, err = d.all(func(k Key) bool { return k.Owner == owner })
		return err
	})
	return out, err
}

func (s *memStore) Keys(_ context.Context) ([]Key, error) {
	var out []Key
	err := s.view(func(d *memRecords) error {
		var err error
		out, err = d.all(func(Key) bool { return true })
		return err
	})
	return out, err
}

func (s *memStore) UpdateKey(_ context.Context, id string, fn func(*Key) error) (Key, error) {
	var k Key
	err := s.update(func(d *memRecords) error {
		var err error
		if k, err = d.key(id); err != nil {
			return err
		}
		fixed := k
		if err := fn(&k); err != nil {
			return err
		}
		k.ID, k.Hash, k.Owner, k.Created, k.Preview, k.Stamped = fixed.ID, fixed.Hash, fixed.Owner, fixed.Created, fixed.Preview, fixed.Stamped
		d.Keys[id] = MarshalKey(k)
		return nil
	})
	return k, err
}

func (s *memStore) RotateKey(_ context.Context, oldID string, next Key, retireAt time.Time, maxPerOwner int) (Key, error) {
	var old Key
	err := s.update(func(d *memRecords) error {
		var err error
		if old, err = d.key(oldID); err != nil {
			return err
		}
		if err := CheckRotatable(old); err != nil {
			return err
		}
		if err := d.checkCreate(next, CreateOptions{}); err != nil {
			return err
		}
		if !retireAt.IsZero() {
			if err := d.checkLimit(old.Owner, maxPerOwner); err != nil {
				return err
			}
		}
		d.putKey(next)
		if retireAt.IsZero() {
			d.deleteKey(old)
		} else {
			d.Keys[oldID] = MarshalKey(Retired(old, retireAt))
		}
		return nil
	})
	return old, err
}

func (s *memStore) DeleteKey(_ context.Context, id string) (Key, error) {
	var k Key
	err := s.update(func(d *memRecords) error {
		var err error
		if k, err = d.key(id); err == nil {
			d.deleteKey(k)
		}
		return err
	})
	return k, err
}

func (s *memStore) DeleteKeysOf(_ context.Context, owner Owner) ([]Key, error) {
	var removed []Key
	err := s.update(func(d *memRecords) error {
		var err error
		removed, err = d.removeKeysOf(owner)
		return err
	})
	return removed, err
}

func (s *memStore) TouchKeys(_ context.Context, lastUsed map[string]time.Time) error {
	return s.update(func(d *memRecords) error {
		for id, t := range lastUsed {
			k, err := d.key(id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if t = t.Truncate(time.Microsecond); t.After(k.LastUsed) {
				k.LastUsed = t
				d.Keys[id] = MarshalKey(k)
			}
		}
		return nil
	})
}

func (s *memStore) User(_ context.Context, name string) (User, error) {
	var u User
	err := s.view(func(d *memRecords) error {
		v, ok := d.Users[name]
		if !ok {
			return ErrNotFound
		}
		var err error
		u, err = UnmarshalUser(name, v)
		return err
	})
	return u, err
}

func (s *memStore) Users(_ context.Context) ([]User, error) {
	var out []User
	err := s.view(func(d *memRecords) error {
		for name, v := range d.Users {
			u, err := UnmarshalUser(name, v)
			if err != nil {
				return err
			}
			out = append(out, u)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b User) int { return cmp.Compare(a.Name, b.Name) })
	return out, err
}

func (s *memStore) CreateUser(_ context.Context, u User) error {
	if err := CheckName(u.Name); err != nil {
		return err
	}
	return s.update(func(d *memRecords) error {
		if _, ok := d.Users[u.Name]; ok {
			return ErrExists
		}
		v, err := MarshalUser(u)
		d.Users[u.Name] = v
		return err
	})
}

func (s *memStore) UpdateUser(_ context.Context, name string, fn func(*User) error) (User, error) {
	var u User
	err := s.update(func(d *memRecords) error {
		v, ok := d.Users[name]
		if !ok {
			return ErrNotFound
		}
		var err error
		if u, err = UnmarshalUser(name, v); err != nil {
			return err
		}
		fixed := u
		if err := fn(&u); err != nil {
			return err
		}
		u.Name, u.Created = fixed.Name, fixed.Created
		d.Users[name], err = MarshalUser(u)
		return err
	})
	return u, err
}

func (s *memStore) DeleteUser(_ context.Context, name string) ([]Key, error) {
	var removed []Key
	err := s.update(func(d *memRecords) error {
		if _, ok := d.Users[name]; !ok {
			return ErrNotFound
		}
		var err error
		if removed, err = d.removeKeysOf(PasswordUser(name)); err == nil {
			delete(d.Users, name)
		}
		return err
	})
	return removed, err
}

func (s *memStore) UpdateCredits(_ context.Context, id string, fn func(*CreditAccount, bool) error) (CreditAccount, error) {
	var a CreditAccount
	err := s.update(func(d *memRecords) error {
		a = CreditAccount{ID: id}
		v, exists := d.Credits[id]
		if exists {
			var err error
			if a, err = UnmarshalCreditAccount(id, v); err != nil {
				return err
			}
		}
		if err := fn(&a, exists); err != nil {
			return err
		}
		a.ID = id
		var err error
		d.Credits[id], err = MarshalCreditAccount(a)
		return err
	})
	return a, err
}

func (s *memStore) CreditAccount(_ context.Context, id string) (CreditAccount, error) {
	var a CreditAccount
	err := s.view(func(d *memRecords) error {
		v, ok := d.Credits[id]
		if !ok {
			return ErrNotFound
		}
		var err error
		a, err = UnmarshalCreditAccount(id, v)
		return err
	})
	return a, err
}

func (s *memStore) CreditAccounts(_ context.Context) ([]CreditAccount, error) {
	var out []CreditAccount
	err := s.view(func(d *memRecords) error {
		for id, v := range d.Credits {
			a, err := UnmarshalCreditAccount(id, v)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b CreditAccount) int { return cmp.Compare(a.ID, b.ID) })
	return out, err
}

func (s *memStore) AddNotices(_ context.Context, notices []Notice) error {
	return s.update(func(d *memRecords) error {
		for _, n := range notices {
			_, pending := d.Pending[n.Endpoint][n.ID]
			if _, done := d.Done[n.Endpoint][n.ID]; pending || done {
				continue
			}
			v, err := MarshalNotice(n)
			if err != nil {
				return err
			}
			putNotice(d.Pending, n.Endpoint, n.ID, v)
		}
		return nil
	})
}

func putNotice(m map[string]map[string][]byte, endpoint, id string, v []byte) {
	if m[endpoint] == nil {
		m[endpoint] = map[string][]byte{}
	}
	m[endpoint][id] = v
}

func (s *memStore) Notices(_ context.Context, endpoint string) ([]Notice, error) {
	var out []Notice
	err := s.view(func(d *memRecords) error {
		for id, v := range d.Pending[endpoint] {
			n, err := UnmarshalNotice(endpoint, id, v)
			if err != nil {
				return err
			}
			out = append(out, n)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Notice) int { return cmp.Compare(a.ID, b.ID) })
	return out, err
}

func (s *memStore) UpdateNotice(_ context.Context, endpoint, id string, fn func(*Notice) error) (Notice, error) {
	var n Notice
	err := s.update(func(d *memRecords) error {
		v, ok := d.Pending[endpoint][id]
		if !ok {
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
		if n.Done.IsZero() {
			putNotice(d.Pending, endpoint, id, v)
			return nil
		}
		delete(d.Pending[endpoint], id)
		putNotice(d.Done, endpoint, id, v)
		return nil
	})
	return n, err
}

func (s *memStore) PruneNotices(_ context.Context, endpoint string, now time.Time) (int, error) {
	pruned := 0
	err := s.update(func(d *memRecords) error {
		for id, v := range d.Done[endpoint] {
			n, err := UnmarshalNotice(endpoint, id, v)
			if err != nil {
				return err
			}
			if n.KeepUntil.Before(now) {
				delete(d.Done[endpoint], id)
				pruned++
			}
		}
		return nil
	})
	return pruned, err
}

func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

var (
	_ Store       = (*memStore)(nil)
	_ NoticeStore = (*memStore)(nil)
)
