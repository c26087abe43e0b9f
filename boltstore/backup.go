package boltstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// A backup is a bbolt file in this package's layout, like a store file,
// with a manifest in its meta bucket: the format, when it was taken, its
// record counts and a SHA-256 of every record, so that a backup that was
// cut short or altered is refused (bbolt's check finds damaged pages,
// not changed bytes in a record).

// backupFormat is the version of the manifest.
const backupFormat = 1

var metaBackup = []byte("backup")

// Manifest describes a backup.
type Manifest struct {
	// Format is the manifest's version.
	Format int `json:"format"`
	// Taken is when the snapshot was taken.
	Taken time.Time `json:"taken"`
	// Counts are the records it holds.
	Counts keystore.Counts `json:"counts"`
	// Digest is the SHA-256, in hex, of every record but the manifest.
	Digest string `json:"sha256"`
}

// Snapshot makes a consistent copy of the store, as of now, while it
// keeps serving: a read transaction written out (Tx.WriteTo) to a
// temporary file at disk speed, then let go, so that a slow or stalled
// reader of the copy holds a file, never the store (a read transaction
// held open would stop the file's growth, and so every write, once the
// file outgrew its mapping). Close removes the file.
func (s *Store) Snapshot(context.Context) (keystore.Snapshot, error) {
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	counts := countRecords(tx)
	f, err := os.CreateTemp("", "apikeys-snapshot-*.db")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name()) // the open file is all that is needed
	if _, err := tx.WriteTo(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("writing the snapshot: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, err
	}
	return &tempSnapshot{f: f, size: tx.Size(), counts: counts}, nil
}

// tempSnapshot is a snapshot written to an unlinked temporary file.
type tempSnapshot struct {
	f      *os.File
	size   int64
	counts keystore.Counts
}

func (t *tempSnapshot) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, t.f) }
func (t *tempSnapshot) Size() int64                        { return t.size }
func (t *tempSnapshot) Counts() keystore.Counts            { return t.counts }
func (t *tempSnapshot) Close() error                       { return t.f.Close() }

// snapshot is a consistent copy of a bbolt file being read: a read
// transaction (of a temporary file that no one writes).
type snapshot struct {
	tx     *bolt.Tx
	counts keystore.Counts
}

func (sn *snapshot) WriteTo(w io.Writer) (int64, error) { return sn.tx.WriteTo(w) }
func (sn *snapshot) Size() int64                        { return sn.tx.Size() }
func (sn *snapshot) Counts() keystore.Counts            { return sn.counts }
func (sn *snapshot) Close() error                       { return sn.tx.Rollback() }

// SaveBackup writes the snapshot src (size bytes of a bbolt file, holding
// the records want counts) to path as a backup: to a temporary
// file beside it, synced, with its manifest added, checked (Check) and
// only then renamed to path. A short or damaged copy leaves path as it
// was.
func SaveBackup(path string, src io.WriterTo, size int64, want keystore.Counts, taken time.Time) (Report, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return Report{}, err
	}
	name := tmp.Name()
	defer os.Remove(name) // after the rename, there is nothing to remove
	n, err := src.WriteTo(tmp)
	if err == nil && n != size {
		err = fmt.Errorf("the snapshot ended after %d of its %d bytes", n, size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Report{}, fmt.Errorf("writing %s: %w", name, err)
	}
	if err := addManifest(name, taken); err != nil {
		return Report{}, err
	}
	rep, err := Check(name)
	if err == nil && rep.Counts != want {
		err = &DamagedError{Path: name, Problem: fmt.Sprintf("it holds %+v, the snapshot %+v", rep.Counts, want)}
	}
	if err != nil {
		return rep, fmt.Errorf("the backup written is not sound, %s is left as it was: %w", path, err)
	}
	rep.Path = path
	if err := os.Rename(name, path); err != nil {
		return rep, err
	}
	return rep, syncDir(dir)
}

// addManifest writes the copied file's manifest: its counts and digest,
// which Check then verifies with every record decoded.
func addManifest(path string, taken time.Time) error {
	if _, err := checkIsolated(checkRequest{Path: path, PagesOnly: true, LockTimeout: time.Second}); err != nil {
		return err
	}
	db, err := openBolt(path, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return &DamagedError{Path: path, Problem: "a bbolt file, but not a key store (no meta bucket)"}
		}
		m := Manifest{Format: backupFormat, Taken: taken.UTC(), Counts: countRecords(tx), Digest: recordsDigest(tx)}
		v, err := json.Marshal(m)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaBackup, v)
	})
	return errors.Join(err, db.Close())
}

// checkManifest reads a backup's manifest, if the file has one, and
// checks its records against it.
func checkManifest(tx *bolt.Tx, counts keystore.Counts) (*Manifest, error) {
	v := tx.Bucket(bucketMeta).Get(metaBackup)
	if v == nil {
		return nil, nil // a store file
	}
	var m Manifest
	if err := json.Unmarshal(v, &m); err != nil || m.Format == 0 {
		return nil, &DamagedError{Problem: "its backup manifest is unreadable"}
	}
	if m.Format > backupFormat {
		return &m, fmt.Errorf("its backup format %d is newer than this build reads (%d): restore it with the release that wrote it", m.Format, backupFormat)
	}
	if m.Counts != counts {
		return &m, &DamagedError{Problem: fmt.Sprintf("it holds %+v, its manifest says %+v", counts, m.Counts)}
	}
	if got := recordsDigest(tx); got != m.Digest {
		return &m, &DamagedError{Problem: "its records are not those it was written with (SHA-256 " + got[:12] + "…, manifest " + m.Digest[:min(12, len(m.Digest))] + "…)"}
	}
	return &m, nil
}

// recordsDigest is the SHA-256 of every bucket's name and records, in
// order, each length-prefixed, the manifest left out.
func recordsDigest(tx *bolt.Tx) string {
	h := sha256.New()
	put := func(b []byte) {
		_, _ = h.Write(binary.AppendUvarint(nil, uint64(len(b))))
		_, _ = h.Write(b)
	}
	_ = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		put(name)
		return b.ForEach(func(k, v []byte) error {
			if bytes.Equal(name, bucketMeta) && bytes.Equal(k, metaBackup) {
				return nil
			}
			put(k)
			put(v)
			return nil
		})
	})
	return hex.EncodeToString(h.Sum(nil))
}

// Restore makes the backup at backup the store file at path, which no
// process may hold: it checks the backup (Check), copies it beside path,
// drops its manifest, syncs it and renames it over path. A store file
// already at path that holds any record is refused unless replace is
// set.
func Restore(backup, path string, replace bool) (Report, error) {
	rep, err := Check(backup)
	if err != nil {
		return rep, fmt.Errorf("the backup cannot be restored: %w", err)
	}
	if rep.Backup == nil {
		return rep, fmt.Errorf("%s is a store file, not a backup: take a backup with 'caddy apikeys backup' (its records are checked against what was written), or copy the file yourself", backup)
	}
	// A link is followed, so that the file the config names is the one
	// restored, not the link replaced.
	for range 40 { // a link to a file not made yet is followed too
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			break
		}
		to, err := os.Readlink(path)
		if err != nil {
			return rep, err
		}
		if !filepath.IsAbs(to) {
			to = filepath.Join(filepath.Dir(path), to)
		}
		path = to
	}
	if a, err := os.Stat(backup); err == nil {
		if b, err := os.Stat(path); err == nil && os.SameFile(a, b) {
			return rep, fmt.Errorf("%s is the backup itself: restore it into another file", path)
		}
	}
	if err := refuseNonEmpty(path, replace); err != nil {
		return rep, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return rep, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".restore-*")
	if err != nil {
		return rep, err
	}
	name := tmp.Name()
	defer os.Remove(name)
	src, err := os.Open(backup)
	if err == nil {
		_, err = io.Copy(tmp, src)
		_ = src.Close()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, fmt.Errorf("copying %s: %w", backup, err)
	}
	db, err := openBolt(name, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return rep, err
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(metaBackup) })
	if err = errors.Join(err, db.Close()); err != nil {
		return rep, err
	}
	if err := os.Rename(name, path); err != nil {
		return rep, err
	}
	rep.Path = path
	return rep, syncDir(dir)
}

// refuseNonEmpty refuses to replace a store file that holds records,
// unless replace is set, or one that a process holds.
func refuseNonEmpty(path string, replace bool) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	rep, err := Check(path)
	switch {
	case errors.Is(err, ErrLocked):
		return fmt.Errorf("%s is in use, probably by a running Caddy: stop it before restoring", path)
	case replace:
		return nil // a damaged or newer store too: what a restore replaces
	case err != nil:
		return fmt.Errorf("%w; pass --force to replace it", err)
	case !rep.Counts.Empty():
		return fmt.Errorf("%s holds %d keys, %d users and %d credit accounts: pass --force to replace it with the backup", path, rep.Counts.Keys, rep.Counts.Users, rep.Counts.Credits)
	}
	return nil
}

// syncDir syncs a directory, so that a rename in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Records are every record of a store, read at one moment, for a
// snapshot of a backend that is not a bbolt file (etcd).
type Records struct {
	Keys    []keystore.Key
	Users   []keystore.User
	Credits []keystore.CreditAccount
	// Notices pending, and done ones remembered.
	Notices, NoticesDone []keystore.Notice
}

// SnapshotOf writes records into a new bbolt file of this package's
// layout, in a temporary directory, and returns it as a snapshot; Close
// removes the file.
func SnapshotOf(r Records) (keystore.Snapshot, error) {
	dir, err := os.MkdirTemp("", "apikeys-snapshot-")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "snapshot.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true}) // synced once, by the backup
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error { return fill(tx, r) })
	}
	if err != nil {
		if db != nil {
			_ = db.Close()
		}
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("writing the snapshot: %w", err)
	}
	tx, err := db.Begin(false)
	if err != nil {
		_ = db.Close()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	counts, err := checkRecords(tx)
	if err != nil {
		_ = tx.Rollback()
		_ = db.Close()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return &fileSnapshot{snapshot: snapshot{tx: tx, counts: counts}, db: db, dir: dir}, nil
}

// fill writes records into a new file's transaction.
func fill(tx *bolt.Tx, r Records) error {
	if err := initSchema(tx); err != nil {
		return err
	}
	for _, k := range r.Keys {
		if err := putKey(tx, k, nil); err != nil {
			return err
		}
	}
	for _, u := range r.Users {
		v, err := keystore.MarshalUser(u)
		if err == nil {
			err = tx.Bucket(bucketUsers).Put([]byte(u.Name), v)
		}
		if err != nil {
			return err
		}
	}
	for _, a := range r.Credits {
		v, err := keystore.MarshalCreditAccount(a)
		if err == nil {
			err = tx.Bucket(bucketCredits).Put([]byte(a.ID), v)
		}
		if err != nil {
			return err
		}
	}
	for bucket, notices := range map[string][]keystore.Notice{string(bucketNotices): r.Notices, string(bucketNoticesDone): r.NoticesDone} {
		for _, n := range notices {
			v, err := keystore.MarshalNotice(n)
			if err == nil {
				err = tx.Bucket([]byte(bucket)).Put(noticeKey(n.Endpoint, n.ID), v)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// fileSnapshot is a snapshot in a temporary file of its own.
type fileSnapshot struct {
	snapshot
	db  *bolt.DB
	dir string
}

func (f *fileSnapshot) Close() error {
	return errors.Join(f.tx.Rollback(), f.db.Close(), os.RemoveAll(f.dir))
}

// countRecords counts the records of each kind from the buckets' page
// statistics, without decoding them (checkRecords does).
func countRecords(tx *bolt.Tx) keystore.Counts {
	n := func(name []byte) int {
		if b := tx.Bucket(name); b != nil {
			return b.Stats().KeyN
		}
		return 0
	}
	return keystore.Counts{Keys: n(bucketKeys), Users: n(bucketUsers), Credits: n(bucketCredits),
		Notices: n(bucketNotices), NoticesDone: n(bucketNoticesDone)}
}
