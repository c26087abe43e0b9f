package boltstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"os"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// DamagedError says that a file is not a sound store or backup, and what
// is wrong with it. Open returns it instead of serving from such a file;
// Check reports it.
type DamagedError struct {
	// Path is the file.
	Path string
	// Problem says what is wrong, e.g. "truncated: 4096 of 16384 bytes".
	Problem string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("%s is damaged: %s; restore it from a backup (caddy apikeys restore <backup> --db %s) or move it away to start with an empty store; 'caddy apikeys check --db %s' tells the same without starting Caddy",
		e.Path, e.Problem, e.Path, e.Path)
}

// Is makes errors.Is(err, ErrDamaged) match.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// Report is what Check found in a file.
type Report struct {
	// Path is the file checked.
	Path string `json:"path"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
	// Schema is the layout version the file records.
	Schema uint64 `json:"schema_version"`
	// Counts are the records it holds.
	Counts keystore.Counts `json:"counts"`
	// Backup describes the backup, when the file is one.
	Backup *Manifest `json:"backup,omitempty"`
}

// openBolt opens a bbolt file, turning what bbolt does with a file that is
// not one, or is cut short (it panics reading the freelist past the end),
// into a DamagedError.
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	// A read of a page past the end of a mapped file is a fault; make it
	// a panic that the recover below turns into an error.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, &DamagedError{Path: path, Problem: fmt.Sprint("unreadable: ", r)}
		}
	}()
	if err := preflight(path); err != nil {
		return nil, err
	}
	db, err = bolt.Open(path, 0o600, opts)
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("opening %s: %w (is another Caddy running with it? use 'caddy reload' to change a running server's config)", path, ErrLocked)
	case errors.Is(err, bolterrors.ErrInvalid):
		return nil, &DamagedError{Path: path, Problem: "not a bbolt database (neither of its two meta pages is valid)"}
	case errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
		return nil, &DamagedError{Path: path, Problem: err.Error()}
	case err != nil:
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return db, nil
}

// preflight refuses a file that is cut short before bbolt reads it: bbolt
// panics reading pages past its end while it holds the file's lock. It
// reads the two meta pages (bbolt's layout: a 16-byte page header, then
// magic, version, page size, flags, root bucket, freelist, high-water page
// id, txid and an FNV-64a checksum of the fields before it), and requires
// the file to be as long as the newest valid one says. A file without a
// valid meta page is left to bbolt, which refuses it.
func preflight(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new store
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		// bbolt would start a new store in it and lose what it held.
		return &DamagedError{Path: path, Problem: "empty (0 bytes); if this gateway never held keys, remove the file"}
	}
	if m := newestMeta(f); m != nil {
		if need := int64(m.pgid) * int64(m.pageSize); fi.Size() < need {
			return &DamagedError{Path: path, Problem: fmt.Sprintf("truncated: %d bytes, its pages need %d", fi.Size(), need)}
		}
	}
	return nil
}

// newestMeta reads the file's two meta pages and returns the valid one
// with the higher transaction id, as bbolt picks, or nil.
func newestMeta(f *os.File) *boltMeta {
	var best *boltMeta
	for _, off := range []int64{0, -1} {
		if off < 0 {
			if best == nil {
				break
			}
			off = int64(best.pageSize)
		}
		buf := make([]byte, 16+64)
		if _, err := f.ReadAt(buf, off); err != nil {
			continue
		}
		if m, ok := parseMeta(buf[16:]); ok && (best == nil || m.txid > best.txid) {
			best = &m
		}
	}
	return best
}

// boltMeta is what preflight reads of a bbolt meta page.
type boltMeta struct {
	pageSize uint32
	root     uint64 // the page of the root bucket
	freelist uint64 // the freelist's page
	pgid     uint64 // the high-water mark: pages in use are below it
	txid     uint64
}

// parseMeta reads a meta page's fields, if it is valid.
func parseMeta(b []byte) (boltMeta, bool) {
	le := binary.LittleEndian // bbolt writes its own machine's order; ours
	const magic, version = 0xED0CDAED, 2
	if le.Uint32(b[0:]) != magic || le.Uint32(b[4:]) != version {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(b[:56])
	if h.Sum64() != le.Uint64(b[56:]) {
		return boltMeta{}, false
	}
	m := boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]), pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	return m, m.pageSize >= 512
}

// checkPages checks the structure of an open file: that it is as long as
// its pages say (a read past its end would fault), and that every page
// is reachable once and sound (bbolt's own check).
func checkPages(db *bolt.DB, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); fi.Size() < need {
			return &DamagedError{Path: path, Problem: fmt.Sprintf("truncated: %d bytes, its pages need %d", fi.Size(), need)}
		}
		var problems []string
		for err := range tx.Check() {
			if len(problems) < 3 {
				// bbolt reports what its check recovered from as
				// "panic: assertion failed: …": the page found.
				msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "panic: "), "assertion failed: ")
				problems = append(problems, msg)
			} else if len(problems) == 3 {
				problems = append(problems, "…")
			}
		}
		if len(problems) > 0 {
			return &DamagedError{Path: path, Problem: "bbolt's check failed: " + strings.Join(problems, "; ")}
		}
		return nil
	})
}

// Check checks the store or backup file at path without changing it:
// its pages, its schema version, every record and index entry, and, for a
// backup, that its records are those it was written with. The check runs
// in a child process (see checkEnv), so a file whose damage crashes the
// check is reported, not fatal. The file must not be open in another
// process (a running Caddy's is locked; back it up instead). A problem is
// a *DamagedError.
func Check(path string) (Report, error) {
	return checkIsolated(checkRequest{Path: path, LockTimeout: time.Second})
}

// checkHere is Check in this process.
func checkHere(req checkRequest) (Report, error) {
	path := req.Path
	r := Report{Path: path}
	fi, err := os.Stat(path)
	if err != nil {
		return r, err
	}
	r.Size = fi.Size()
	if err := preflight(path); err != nil {
		return r, err
	}
	if !req.TrustPages {
		if err := walkPages(path); err != nil {
			return r, err
		}
	}
	db, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: req.LockTimeout})
	if err != nil {
		return r, err
	}
	defer db.Close()
	if req.PagesOnly {
		return r, checkPages(db, path)
	}
	// bbolt's check of the pages and the decoding of every record read
	// the file apart: on two cores the check takes the time of the longer
	// (BENCHMARKS.md). The pages are checked through a handle of their
	// own, as bbolt's check loads the freelist of a read-only handle
	// unguarded against the handle's other transactions. A problem with
	// the pages is the one reported.
	pagesDB, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: req.LockTimeout})
	if err != nil {
		return r, err
	}
	defer pagesDB.Close()
	pages := make(chan error, 1)
	go func() { pages <- checkPages(pagesDB, path) }()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	err = db.View(func(tx *bolt.Tx) (err error) {
		defer func() {
			// bbolt asserts what it reads of a page; what the walk and
			// its check did not find, the decoding may.
			if v := recover(); v != nil {
				err = &DamagedError{Problem: fmt.Sprint("unreadable: ", v)}
			}
		}()
		if isBare(tx) {
			return nil // a new store, before its buckets were made
		}
		if r.Schema, err = schemaOf(tx); err != nil {
			return err
		}
		if r.Counts, err = checkRecords(tx); err != nil {
			return err
		}
		r.Backup, err = checkManifest(tx, r.Counts)
		return err
	})
	if perr := <-pages; perr != nil {
		err = perr
	}
	var damaged *DamagedError
	if errors.As(err, &damaged) && damaged.Path == "" {
		damaged.Path = path
	}
	return r, err
}

// isBare says whether a bbolt file has no buckets at all: what Open
// leaves if it stops between creating the file and making the store's
// buckets in it.
func isBare(tx *bolt.Tx) bool {
	k, _ := tx.Cursor().First()
	return k == nil
}

// schemaOf is the layout version a file records.
func schemaOf(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, &DamagedError{Problem: "a bbolt file, but not a key store (no meta bucket)"}
	}
	v := meta.Get(metaSchemaVersion)
	switch {
	case v == nil:
		return 1, nil // the first layout did not record one
	case len(v) != 8:
		return 0, &DamagedError{Problem: "its schema version record is corrupt"}
	}
	got := binary.BigEndian.Uint64(v)
	if got > schemaVersion {
		return got, &NewerError{Version: got}
	}
	return got, nil
}

// NewerError says a file was written by a newer release, in a layout
// this one does not know: it is refused rather than misread.
type NewerError struct {
	// Version is the file's schema version.
	Version uint64
}

func (e *NewerError) Error() string {
	return fmt.Sprintf("its schema version %d is newer than this build supports (%d): it was written by a newer release; run that release, or restore a backup this one wrote", e.Version, schemaVersion)
}

// checkRecords decodes every record and checks that the indexes and the
// keys agree, one entry per key, and counts the records.
func checkRecords(tx *bolt.Tx) (keystore.Counts, error) {
	var c keystore.Counts
	keys := tx.Bucket(bucketKeys)
	if keys == nil {
		return c, &DamagedError{Problem: "no keys bucket"}
	}
	// The index entries the keys call for and those the indexes hold are
	// compared as two multisets, each summed into one hash, in one pass
	// over each bucket in order: a lookup per key took twice as long
	// (BENCHMARKS.md). Only when they differ is each key looked up, to
	// name one.
	seed := maphash.MakeSeed()
	var want, have uint64
	err := keys.ForEach(func(id, v []byte) error {
		k, err := keystore.UnmarshalKey(string(id), v)
		if err != nil {
			return &DamagedError{Problem: fmt.Sprintf("key %q: %v", id, err)}
		}
		at := digestEntryOf(k)
		want += entryHash(seed, at.bucket, at.key, id) + entryHash(seed, bucketOwners, ownerIndexKey(k), nil)
		c.Keys++
		return nil
	})
	if err != nil {
		return c, err
	}
	entries := 0
	for _, name := range [][]byte{bucketHashes, bucketStamped, bucketOwners} {
		if b := tx.Bucket(name); b != nil {
			_ = b.ForEach(func(k, v []byte) error {
				have += entryHash(seed, name, k, v)
				entries++
				return nil
			})
		}
	}
	if entries != 2*c.Keys || have != want {
		return c, indexMismatch(tx, c.Keys)
	}
	if err := decodeOthers(tx, &c); err != nil {
		return c, err
	}
	return c, nil
}

// entryHash hashes one index entry: its bucket, key and value.
func entryHash(seed maphash.Seed, bucket, key, value []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	_, _ = h.Write(bucket)
	_ = h.WriteByte(0)
	_, _ = h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(key))))
	_, _ = h.Write(key)
	_, _ = h.Write(value)
	return h.Sum64()
}

// indexMismatch names a key the indexes lack, or says that they hold
// entries no key calls for.
func indexMismatch(tx *bolt.Tx, keys int) error {
	digests := map[string]*bolt.Bucket{string(bucketHashes): tx.Bucket(bucketHashes), string(bucketStamped): tx.Bucket(bucketStamped)}
	owners := tx.Bucket(bucketOwners)
	err := tx.Bucket(bucketKeys).ForEach(func(id, v []byte) error {
		k, _ := keystore.UnmarshalKey(string(id), v)
		at := digestEntryOf(k)
		if b := digests[string(at.bucket)]; b == nil || !bytes.Equal(b.Get(at.key), id) {
			return &DamagedError{Problem: fmt.Sprintf("key %q is missing from the digest index", id)}
		}
		if owners == nil || owners.Get(ownerIndexKey(k)) == nil {
			return &DamagedError{Problem: fmt.Sprintf("key %q is missing from the owner index", id)}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return &DamagedError{Problem: fmt.Sprintf("its digest and owner indexes hold entries none of its %d keys calls for", keys)}
}

// decodeOthers decodes and counts the users, credit accounts and notices.
func decodeOthers(tx *bolt.Tx, c *keystore.Counts) error {
	decode := []struct {
		bucket []byte
		count  *int
		check  func(k, v []byte) error
	}{
		{bucketUsers, &c.Users, func(k, v []byte) error { _, err := keystore.UnmarshalUser(string(k), v); return err }},
		{bucketCredits, &c.Credits, func(k, v []byte) error { _, err := keystore.UnmarshalCreditAccount(string(k), v); return err }},
		{bucketNotices, &c.Notices, checkNotice},
		{bucketNoticesDone, &c.NoticesDone, checkNotice},
	}
	for _, d := range decode {
		b := tx.Bucket(d.bucket)
		if b == nil {
			continue // an older layout
		}
		err := b.ForEach(func(k, v []byte) error {
			if err := d.check(k, v); err != nil {
				return &DamagedError{Problem: fmt.Sprintf("%s record %q: %v", d.bucket, k, err)}
			}
			*d.count++
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func checkNotice(k, v []byte) error {
	endpoint, id, ok := bytes.Cut(k, []byte{0})
	if !ok {
		return errors.New("no endpoint in its name")
	}
	_, err := keystore.UnmarshalNotice(string(endpoint), string(id), v)
	return err
}
