package keystore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout version recorded in a bbolt file. A file with
// a newer version is refused rather than misread.
const SchemaVersion = 1

// DefaultOpenTimeout bounds how long OpenBolt waits for the file lock.
const DefaultOpenTimeout = 5 * time.Second

// ErrLocked means another process holds the database file.
var ErrLocked = errors.New("database file is locked by another process")

var (
	bucketMeta   = []byte("meta")
	bucketKeys   = []byte("keys")   // id -> keyRecord JSON
	bucketHashes = []byte("hashes") // sha256 -> id
	bucketOwners = []byte("owners") // owner 0x00 created(8, big endian) id -> empty
	bucketUsers  = []byte("users")  // name -> userRecord JSON

	metaSchemaVersion = []byte("schema_version")
)

// ErrClosed is returned by operations on a closed store.
var ErrClosed = errors.New("key store is closed")

// maxCommitBatch bounds how many key creations share one transaction.
const maxCommitBatch = 1024

// BoltStore is a Store in a single bbolt file.
type BoltStore struct {
	db *bolt.DB

	// Key creations go through one writer goroutine that commits all
	// requests waiting at that moment in one transaction (group commit):
	// one fsync for many concurrent mints, and no added delay for a lone
	// one, unlike bolt.DB.Batch's timer.
	creates    chan createRequest
	quit       chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
}

type createRequest struct {
	key  Key
	val  []byte
	done chan error
}

// OpenBolt opens (creating if needed) the bbolt store at path. It waits at
// most timeout for the file lock (DefaultOpenTimeout if zero) and then
// fails with ErrLocked instead of hanging.
func OpenBolt(path string, timeout time.Duration) (*BoltStore, error) {
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("opening %s: %w (is another Caddy running with it? use 'caddy reload' to change a running server's config)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := db.Update(initSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	s := &BoltStore{
		db:         db,
		creates:    make(chan createRequest),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	go s.writeCreates()
	return s, nil
}

func initSchema(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketMeta, bucketKeys, bucketHashes, bucketOwners, bucketUsers} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaSchemaVersion); v != nil {
		if len(v) != 8 {
			return fmt.Errorf("corrupt schema version record")
		}
		if got := binary.BigEndian.Uint64(v); got > SchemaVersion {
			return fmt.Errorf("schema version %d is newer than this build supports (%d)", got, SchemaVersion)
		}
		return nil
	}
	return meta.Put(metaSchemaVersion, binary.BigEndian.AppendUint64(nil, SchemaVersion))
}

// DB exposes the underlying bbolt handle, for statistics and checks.
func (s *BoltStore) DB() *bolt.DB { return s.db }

// Close stops the writer and closes the database file.
func (s *BoltStore) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.writerDone
	})
	return s.db.Close()
}

// keyRecord is the on-disk form of a Key. Times are Unix microseconds so
// that float seconds round-trip exactly as the API reports them.
type keyRecord struct {
	ID       string `json:"id"`
	Hash     []byte `json:"h"`
	Owner    string `json:"o"`
	Title    string `json:"t"`
	Preview  string `json:"p"`
	Created  int64  `json:"c"`
	LastUsed int64  `json:"u,omitempty"`
	Expires  int64  `json:"e,omitempty"`
	Disabled bool   `json:"d,omitempty"`
}

func toRecord(k Key) keyRecord {
	return keyRecord{
		ID: k.ID, Hash: k.Hash[:], Owner: k.Owner, Title: k.Title, Preview: k.Preview,
		Created: micros(k.Created), LastUsed: micros(k.LastUsed), Expires: micros(k.Expires),
		Disabled: k.Disabled,
	}
}

func (r keyRecord) key() (Key, error) {
	k := Key{
		ID: r.ID, Owner: r.Owner, Title: r.Title, Preview: r.Preview,
		Created: fromMicros(r.Created), LastUsed: fromMicros(r.LastUsed), Expires: fromMicros(r.Expires),
		Disabled: r.Disabled,
	}
	if copy(k.Hash[:], r.Hash) != len(k.Hash) {
		return Key{}, fmt.Errorf("corrupt key record %q", r.ID)
	}
	return k, nil
}

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

func ownerIndexKey(k Key) []byte {
	b := make([]byte, 0, len(k.Owner)+1+8+len(k.ID))
	b = append(b, k.Owner...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(micros(k.Created)))
	return append(b, k.ID...)
}

// CreateKey stores k. It returns once the transaction holding k is
// committed and synced; concurrent calls share that transaction.
func (s *BoltStore) CreateKey(ctx context.Context, k Key) error {
	val, err := json.Marshal(toRecord(k))
	if err != nil {
		return err
	}
	req := createRequest{key: k, val: val, done: make(chan error, 1)}
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
	for {
		var first createRequest
		select {
		case <-s.quit:
			return
		case first = <-s.creates:
		}
		batch := []createRequest{first}
	drain:
		for len(batch) < maxCommitBatch {
			select {
			case req := <-s.creates:
				batch = append(batch, req)
			default:
				break drain
			}
		}
		s.commitCreates(batch)
	}
}

// commitCreates writes a batch in one transaction. A duplicate fails only
// its own request; a failed commit fails them all.
func (s *BoltStore) commitCreates(batch []createRequest) {
	results := make([]error, len(batch))
	err := s.db.Update(func(tx *bolt.Tx) error {
		keys, hashes, owners := tx.Bucket(bucketKeys), tx.Bucket(bucketHashes), tx.Bucket(bucketOwners)
		for i, req := range batch {
			k := req.key
			if keys.Get([]byte(k.ID)) != nil || hashes.Get(k.Hash[:]) != nil {
				results[i] = ErrExists
				continue
			}
			if err := keys.Put([]byte(k.ID), req.val); err != nil {
				return err
			}
			if err := hashes.Put(k.Hash[:], []byte(k.ID)); err != nil {
				return err
			}
			if err := owners.Put(ownerIndexKey(k), nil); err != nil {
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

// KeyByHash returns the key whose digest is h.
func (s *BoltStore) KeyByHash(_ context.Context, h Hash) (Key, error) {
	var k Key
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketHashes).Get(h[:])
		if id == nil {
			return ErrNotFound
		}
		var err error
		k, err = getKey(tx, id)
		return err
	})
	return k, err
}

func getKey(tx *bolt.Tx, id []byte) (Key, error) {
	v := tx.Bucket(bucketKeys).Get(id)
	if v == nil {
		return Key{}, ErrNotFound
	}
	var r keyRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Key{}, fmt.Errorf("corrupt key record %q: %w", id, err)
	}
	return r.key()
}

// KeysByOwner returns owner's keys, oldest first.
func (s *BoltStore) KeysByOwner(_ context.Context, owner string) ([]Key, error) {
	var out []Key
	prefix := append([]byte(owner), 0)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOwners).Cursor()
		for ik, _ := c.Seek(prefix); ik != nil && bytes.HasPrefix(ik, prefix); ik, _ = c.Next() {
			k, err := getKey(tx, ik[len(prefix)+8:])
			if err != nil {
				return err
			}
			out = append(out, k)
		}
		return nil
	})
	return out, err
}

// DeleteKey removes the key with the given id and returns what it was.
func (s *BoltStore) DeleteKey(_ context.Context, id string) (Key, error) {
	var k Key
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if k, err = getKey(tx, []byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketKeys).Delete([]byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketHashes).Delete(k.Hash[:]); err != nil {
			return err
		}
		return tx.Bucket(bucketOwners).Delete(ownerIndexKey(k))
	})
	return k, err
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
			var r keyRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("corrupt key record %q: %w", id, err)
			}
			if us := t.UnixMicro(); us > r.LastUsed {
				r.LastUsed = us
				nv, err := json.Marshal(r)
				if err != nil {
					return err
				}
				if err := keys.Put([]byte(id), nv); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

type userRecord struct {
	PasswordHash string `json:"password_hash"`
	Created      int64  `json:"created"`
}

// User returns the stored user name.
func (s *BoltStore) User(_ context.Context, name string) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		var r userRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("corrupt user record %q: %w", name, err)
		}
		u = User{Name: name, PasswordHash: r.PasswordHash, Created: fromMicros(r.Created)}
		return nil
	})
	return u, err
}

// PutUser creates or replaces a user.
func (s *BoltStore) PutUser(_ context.Context, u User) error {
	if u.Name == "" {
		return errors.New("username is empty")
	}
	val, err := json.Marshal(userRecord{PasswordHash: u.PasswordHash, Created: micros(u.Created)})
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).Put([]byte(u.Name), val)
	})
}

// Interface guard.
var _ Store = (*BoltStore)(nil)
