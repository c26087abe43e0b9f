package etcdstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/ops"
)

func snapshotKey(t *testing.T, owner string) keystore.Key {
	t.Helper()
	secret, id, err := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return keystore.Key{ID: id, Hash: keystore.HashKey(secret), Owner: keystore.PasswordUser(owner), Title: "t", Stamped: keystore.StampOf(secret, keystore.DefaultPrefix) != "",
		Preview: keystore.Preview(secret, keystore.DefaultPrefix), Created: time.Now().Truncate(time.Microsecond)}
}

// TestSnapshotOfAClusterRestoresEverywhere: a snapshot taken while 16
// writers create keys holds every key created before it began, with the
// users, balances and notices; as a backup it passes boltstore's check,
// restores into a bbolt file and into an empty prefix, and a prefix with
// records is refused.
func TestSnapshotOfAClusterRestoresEverywhere(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := openStore(t, c, Options{})
	ctx := context.Background()
	if err := s.CreateUser(ctx, keystore.User{Name: "bob", PasswordHash: "$argon2id$v=19$m=65536,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", Created: time.Now().Truncate(time.Microsecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateCredits(ctx, "acct", func(a *keystore.CreditAccount, _ bool) error { a.Balance = 42; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.AddNotices(ctx, []keystore.Notice{{Endpoint: "0123abcd", ID: "msg_1", Type: "key.revoked", KeepUntil: time.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		before []keystore.Key
		began  atomic.Bool
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for i := range 16 {
		wg.Go(func() {
			for !stop.Load() {
				k := snapshotKey(t, fmt.Sprint("u", i))
				if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
					t.Error(err)
					return
				}
				if !began.Load() { // answered before the snapshot began
					mu.Lock()
					before = append(before, k)
					mu.Unlock()
				}
			}
		})
	}
	for {
		mu.Lock()
		n := len(before)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(5 * time.Millisecond) // pacing: let the writers write
	}
	began.Store(true)
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	rep, err := boltstore.SaveBackup(backup, snap, snap.Size(), snap.Counts(), time.Now())
	_ = snap.Close()
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts.Keys < len(before) || rep.Counts.Users != 1 || rep.Counts.Credits != 1 || rep.Counts.Notices != 1 {
		t.Fatalf("backup %+v of %d keys created before it", rep.Counts, len(before))
	}

	// Into a bbolt file.
	file := filepath.Join(t.TempDir(), "apikeys.db")
	if _, err := boltstore.Restore(backup, file, false); err != nil {
		t.Fatal(err)
	}
	b, err := boltstore.Open(file, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, k := range before {
		if got, err := b.KeyByHash(ctx, k.Hash, k.ID[:keystore.StampLen]); err != nil || got.ID != k.ID {
			t.Fatalf("key %s created before the snapshot: %+v, %v", k.ID, got, err)
		}
	}
	if a, err := b.CreditAccount(ctx, "acct"); err != nil || a.Balance != 42 {
		t.Fatalf("credits: %+v, %v", a, err)
	}

	// Into an empty prefix of the cluster, and not into one with records.
	fresh := openStore(t, c, Options{})
	m, err := ops.Restore(ctx, b, fresh, nil, false)
	if err != nil || m.KeysCopied != rep.Counts.Keys || m.UsersCopied != 1 || m.CreditsCopied != 1 || m.NoticesCopied != 1 {
		t.Fatalf("restore into an empty prefix: %+v, %v", m, err)
	}
	for _, k := range before {
		if got, err := fresh.KeyByHash(ctx, k.Hash, ""); err != nil || got.ID != k.ID {
			t.Fatalf("key %s after the restore into etcd: %+v, %v", k.ID, got, err)
		}
	}
	if ns, err := fresh.Notices(ctx, "0123abcd"); err != nil || len(ns) != 1 {
		t.Fatalf("notices after the restore: %+v, %v", ns, err)
	}
	if _, err := ops.Restore(ctx, b, s, nil, false); err == nil {
		t.Fatal("a restore into a prefix with records was not refused")
	}
}
