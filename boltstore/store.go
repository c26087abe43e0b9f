// Package boltstore is the keystore.Store kept in a single bbolt file on
// the gateway's disk: the default store, with nothing to run beside Caddy.
//
// One process holds the file at a time (Open fails with ErrLocked while
// another does); key creations share transactions (group commit, see
// commit.go), and every write is synced before it returns.
package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// schemaVersion is the layout version recorded in a bbolt file. A file with
// a newer version is refused rather than misread; an older one is brought
// up to date when opened. Version 2 added the stamped digest index, which
// releases before it would not search.
const schemaVersion = 2

// DefaultOpenTimeout bounds how long Open waits for the file lock.
const DefaultOpenTimeout = 5 * time.Second

var (
	bucketMeta    = []byte("meta")
	bucketKeys    = []byte("keys")    // id -> key record (keystore.MarshalKey)
	bucketHashes  = []byte("hashes")  // sha256 -> id, for keys not stamped
	bucketStamped = []byte("stamped") // stamp sha256 -> id, for stamped keys
	bucketOwners  = []byte("owners")  // owner 0x00 created(8, big endian) id -> empty
	bucketUsers   = []byte("users")   // name -> user record (keystore.MarshalUser)
	bucketCredits = []byte("credits") // account id -> keystore.CreditAccount JSON
	bucketNotices = []byte("notices") // endpoint 0x00 event id -> pending keystore.Notice JSON

	bucketNoticesDone = []byte("notices_done") // the same, for done ones

	metaSchemaVersion = []byte("schema_version")
)

// Store is a keystore.Store and keystore.NoticeStore in a single bbolt
// file: keys as keystore's binary records (keystore.MarshalKey) indexed
// by digest and by owner, users, credit accounts and notices as JSON.
type Store struct {
	db *bolt.DB

	// Key creations go through one writer goroutine that commits all
	// requests waiting at that moment in one transaction (group commit):
	// one fsync for many concurrent mints, and no added delay for a lone
	// one, unlike bolt.DB.Batch's timer. Under concurrent load it waits
	// a moment for more (lingerAfter).
	creates    chan createRequest
	quit       chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
}

// Open opens (creating if needed) the bbolt store at path. It waits at
// most timeout for the file lock (DefaultOpenTimeout if zero) and then
// fails with ErrLocked instead of hanging.
func Open(path string, timeout time.Duration) (*Store, error) {
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for %s: %w", path, err)
	}
	if err := checkBeforeOpen(path, timeout); err != nil {
		return nil, err
	}
	db, err := openBolt(path, &bolt.Options{
		Timeout: timeout,
		// The free pages are kept in a map (as etcd does). The freelist
		// is written at each commit: not writing it (NoFreelistSync)
		// made minting no faster, while every open then read the whole
		// file to find the free pages again, which took 0.2–0.3 s and
		// left the file resident (480 MB at 10⁶ keys; BENCHMARKS.md).
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, err
	}
	if err := db.Update(initSchema); err != nil {
		_ = db.Close()
		var damaged *DamagedError
		var newer *NewerError
		switch {
		case errors.As(err, &damaged):
			damaged.Path = path
			return nil, damaged
		case errors.As(err, &newer):
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	s := &Store{
		db:         db,
		creates:    make(chan createRequest),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	go s.writeCreates()
	return s, nil
}

// checkBeforeOpen refuses a damaged file before anything is served from
// it (a half-read store would answer some keys and fault on others): it
// checks every page and record, as Check does, in a child process, so
// that neither a crash of the check nor the pages it read stay with the
// gateway. It reads the whole file: 1.1–1.5 s at 10⁶ keys from the page
// cache (BENCHMARKS.md).
func checkBeforeOpen(path string, timeout time.Duration) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil // a new store
	}
	_, err := checkIsolated(checkRequest{Path: path, LockTimeout: timeout})
	var newer *NewerError
	if errors.As(err, &newer) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return err
}

func initSchema(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketMeta, bucketKeys, bucketHashes, bucketStamped, bucketOwners, bucketUsers, bucketCredits, bucketNotices, bucketNoticesDone} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	if meta.Get(metaSchemaVersion) != nil {
		got, err := schemaOf(tx)
		if err != nil || got == schemaVersion {
			return err
		}
	}
	return meta.Put(metaSchemaVersion, binary.BigEndian.AppendUint64(nil, schemaVersion))
}

// DB exposes the underlying bbolt handle, for statistics and checks.
func (s *Store) DB() *bolt.DB { return s.db }

// Close stops the writer and closes the database file.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.writerDone
	})
	return s.db.Close()
}

// Interface guards.
var (
	_ keystore.Store       = (*Store)(nil)
	_ keystore.Snapshotter = (*Store)(nil)
)
