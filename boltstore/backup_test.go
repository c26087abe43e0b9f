package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// backUp takes a backup of s to path as `caddy apikeys backup` does.
func backUp(t *testing.T, s *Store, path string) Report {
	t.Helper()
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	rep, err := SaveBackup(path, snap, snap.Size(), snap.Counts(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestBackupWhileMintingHoldsEveryKeyBefore(t *testing.T) {
	s, _ := openTestBolt(t)
	ctx := context.Background()
	if err := s.CreateUser(ctx, keystore.User{Name: "bob", PasswordHash: "$2a$10$abcdefghijklmnopqrstuuEDdWDLqhtm6UJxM5u.q5uvl1Wj6JXxu", Created: time.Now().Truncate(time.Microsecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateCredits(ctx, "acct", func(a *keystore.CreditAccount, _ bool) error { a.Balance = 77; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.AddNotices(ctx, []keystore.Notice{{Endpoint: "hook", ID: "e1"}}); err != nil {
		t.Fatal(err)
	}

	// 64 minters run before, during and after the snapshot.
	var (
		mu             sync.Mutex
		answered       []keystore.Key // acknowledged, with when
		answeredAt     []time.Time
		stop           atomic.Bool
		wg             sync.WaitGroup
		snapshotBegins time.Time
	)
	for i := range 64 {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				k := testKey(t, fmt.Sprintf("u%d", i), time.Now())
				if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				answered, answeredAt = append(answered, k), append(answeredAt, time.Now())
				mu.Unlock()
			}
		})
	}
	for {
		mu.Lock()
		n := len(answered)
		mu.Unlock()
		if n >= 2000 {
			break
		}
		time.Sleep(time.Millisecond) // pacing: let the minters mint
	}
	snapshotBegins = time.Now()
	backup := filepath.Join(t.TempDir(), "backup.db")
	rep := backUp(t, s, backup)
	stop.Store(true)
	wg.Wait()
	if rep.Backup == nil || rep.Counts.Keys < 2000 || rep.Counts.Users != 1 || rep.Counts.Credits != 1 || rep.Counts.Notices != 1 {
		t.Fatalf("report %+v", rep)
	}

	restored := filepath.Join(t.TempDir(), "apikeys.db")
	if _, err := Restore(backup, restored, false); err != nil {
		t.Fatal(err)
	}
	r, err := Open(restored, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before := 0
	for i, k := range answered {
		got, err := r.KeyByHash(ctx, k.Hash, "")
		if answeredAt[i].Before(snapshotBegins) {
			before++
			if err != nil || got.ID != k.ID {
				t.Fatalf("key %s answered before the backup began: %+v, %v", k.ID, got, err)
			}
		}
	}
	if before < 2000 {
		t.Fatalf("only %d keys answered before the backup", before)
	}
	if u, err := r.User(ctx, "bob"); err != nil || u.PasswordHash == "" {
		t.Fatalf("user: %+v, %v", u, err)
	}
	if a, err := r.CreditAccount(ctx, "acct"); err != nil || a.Balance != 77 {
		t.Fatalf("credits: %+v, %v", a, err)
	}
	if ns, err := r.Notices(ctx, "hook"); err != nil || len(ns) != 1 {
		t.Fatalf("notices: %+v, %v", ns, err)
	}
	// A restored store is a store, not a backup.
	_ = r.Close()
	if rep, err := Check(restored); err != nil || rep.Backup != nil {
		t.Fatalf("restored store: %+v, %v", rep, err)
	}
}

// damage is a way a file goes wrong.
type damage struct {
	name string
	do   func(data []byte) []byte
}

var damages = []damage{
	{"truncated to half", func(d []byte) []byte { return d[:len(d)/2] }},
	{"truncated to two pages", func(d []byte) []byte { return d[:8192] }},
	{"truncated to 100 bytes", func(d []byte) []byte { return d[:100] }},
	{"a page flipped", func(d []byte) []byte {
		for i := 4 * 4096; i < 5*4096 && i < len(d); i++ {
			d[i] ^= 0x5a
		}
		return d
	}},
	{"the pages of keys' records flipped", func(d []byte) []byte {
		// Every page holding a title, old copies in free pages too: one
		// of them is the live one.
		pages := map[int]bool{}
		for at, n := 0, 0; n >= 0; at += n + 1 {
			if n = bytes.Index(d[at:], []byte("title-of-key-")); n >= 0 {
				pages[(at+n)/4096] = true
			}
		}
		for p := range pages {
			for i := p * 4096; i < (p+1)*4096; i++ {
				d[i] ^= 0xa5
			}
		}
		return d
	}},
	{"not a bbolt file", func([]byte) []byte { return []byte("# this is a Caddyfile, not a key store\n:8000 {\n}\n") }},
	{"zeros", func(d []byte) []byte { return make([]byte, len(d)) }},
	{"empty", func([]byte) []byte { return nil }},
}

// filledStore writes a store file with keys, users and credits and
// returns its path and one of its keys.
func filledStore(t *testing.T) (string, keystore.Key) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "apikeys.db")
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var k keystore.Key
	for i := range 300 {
		k = testKey(t, fmt.Sprintf("user%d", i%7), time.Now())
		k.Title = "title-of-key-" + k.ID
		if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UpdateCredits(ctx, "acct", func(a *keystore.CreditAccount, _ bool) error { a.Balance = 5; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, k
}

func TestDamagedStoreIsRefusedWithWhatToDo(t *testing.T) {
	path, _ := filledStore(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "apikeys.db")
			if err := os.WriteFile(p, d.do(bytes.Clone(data)), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(p, time.Second)
			if err == nil {
				_ = s.Close()
				t.Fatal("a damaged file was opened")
			}
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("not refused as damaged: %v", err)
			}
			for _, want := range []string{p, "restore", "backup"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message lacks %q: %v", want, err)
				}
			}
			if _, err := Check(p); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Check: %v", err)
			}
		})
	}
}

func TestCheckPassesSoundFiles(t *testing.T) {
	path, _ := filledStore(t)
	rep, err := Check(path)
	if err != nil || rep.Counts.Keys != 300 || rep.Counts.Credits != 1 || rep.Schema != schemaVersion || rep.Backup != nil {
		t.Fatalf("%+v, %v", rep, err)
	}
	// A file written by the first release is sound too, and Check leaves
	// it as it was (a read-only look).
	v1 := filepath.Join("testdata", "store-v1.db")
	before, _ := os.ReadFile(v1)
	rep, err = Check(v1)
	if err != nil || rep.Schema != 1 || rep.Counts.Keys != 3 {
		t.Fatalf("v1: %+v, %v", rep, err)
	}
	if after, _ := os.ReadFile(v1); !bytes.Equal(before, after) {
		t.Fatal("Check changed the file")
	}
}

func TestAlteredOrCutBackupIsRefusedAndChangesNothing(t *testing.T) {
	path, k := filledStore(t)
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	backUp(t, s, backup)
	_ = s.Close()
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	title := []byte("title-of-key-" + k.ID)
	at := bytes.Index(data, title)
	if at < 0 {
		t.Fatal("title not found in the backup")
	}
	altered := bytes.Clone(data)
	altered[at+len(title)-1] ^= 1 // one bit of one record

	target, _ := filledStore(t) // a store the restore must not touch
	targetBefore, _ := os.ReadFile(target)
	for name, bad := range map[string][]byte{
		"one bit of a record": altered,
		"cut short":           data[:len(data)-4096],
		"half":                data[:len(data)/2],
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "backup.db")
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Check(p); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Check: %v", err)
			}
			_, err := Restore(p, target, true)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "cannot be restored") {
				t.Fatalf("Restore: %v", err)
			}
			if after, _ := os.ReadFile(target); !bytes.Equal(targetBefore, after) {
				t.Fatal("a refused restore changed the target")
			}
			fresh := filepath.Join(t.TempDir(), "new", "apikeys.db")
			if _, err := Restore(p, fresh, false); err == nil {
				t.Fatal("restored")
			}
			if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused restore left a file: %v", err)
			}
		})
	}
}

func TestRestoreRefusesAStoreWithRecordsUnlessForced(t *testing.T) {
	path, _ := filledStore(t)
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	backUp(t, s, backup)

	// Held by a running gateway: refused even when forced.
	if _, err := Restore(backup, path, true); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("restore over a held file: %v", err)
	}
	_ = s.Close()
	if _, err := Restore(backup, path, false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over records: %v", err)
	}
	// An empty store file is no loss.
	empty := filepath.Join(t.TempDir(), "apikeys.db")
	e, err := Open(empty, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = e.Close()
	if rep, err := Restore(backup, empty, false); err != nil || rep.Counts.Keys != 300 {
		t.Fatalf("restore into an empty store: %+v, %v", rep, err)
	}
	if _, err := Restore(backup, path, true); err != nil {
		t.Fatalf("forced: %v", err)
	}
	// A store file is not a backup.
	if _, err := Restore(path, empty, true); err == nil || !strings.Contains(err.Error(), "not a backup") {
		t.Fatalf("restore from a store file: %v", err)
	}
}

func TestNewerStoreIsRefused(t *testing.T) {
	path, _ := filledStore(t)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaSchemaVersion, []byte{0, 0, 0, 0, 0, 0, 0, schemaVersion + 1})
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	_, err = Open(path, time.Second)
	var newer *NewerError
	if !errors.As(err, &newer) || !strings.Contains(err.Error(), "newer release") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open: %v", err)
	}
	if _, err := Check(path); !errors.As(err, &newer) {
		t.Fatalf("Check: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("refusing the file changed it")
	}
}

func TestRestoreFollowsLinksAndRefusesItself(t *testing.T) {
	path, _ := filledStore(t)
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	backUp(t, s, backup)
	_ = s.Close()
	if _, err := Restore(backup, backup, true); err == nil || !strings.Contains(err.Error(), "the backup itself") {
		t.Fatalf("restore of a backup onto itself: %v", err)
	}
	if rep, err := Check(backup); err != nil || rep.Backup == nil {
		t.Fatalf("the backup after a refused restore onto itself: %+v, %v", rep, err)
	}
	dir := t.TempDir()
	real, link := filepath.Join(dir, "real.db"), filepath.Join(dir, "link.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(backup, link, false); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v, %v", fi, err)
	}
	if rep, err := Check(real); err != nil || rep.Counts.Keys != 300 {
		t.Fatalf("the link's target: %+v, %v", rep, err)
	}
}
