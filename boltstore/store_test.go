package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func openTestBolt(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func operatorFor(name string) keystore.Actor {
	return keystore.Actor{Owner: keystore.Service(name), Operator: true}
}

func testKey(t testing.TB, owner string, created time.Time) keystore.Key {
	return testKeyOf(t, keystore.PasswordUser(owner), created)
}

func testKeyOf(t testing.TB, owner keystore.Owner, created time.Time) keystore.Key {
	t.Helper()
	secret, id, err := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return keystore.Key{ID: id, Hash: keystore.HashKey(secret), Owner: owner, Title: "t", Preview: keystore.Preview(secret, keystore.DefaultPrefix), Created: created.Truncate(time.Microsecond)}
}

func TestBoltCreateLookupListDelete(t *testing.T) {
	s, _ := openTestBolt(t)
	ctx := context.Background()
	base := time.Now()
	a1, a2, b1 := testKey(t, "alice", base), testKey(t, "alice", base.Add(time.Second)), testKey(t, "bob", base)
	for _, k := range []keystore.Key{a2, b1, a1} { // inserted out of order
		if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.KeyByHash(ctx, a1.Hash, "")
	if err != nil || got.ID != a1.ID || got.Owner != keystore.PasswordUser("alice") || !got.Created.Equal(a1.Created) {
		t.Fatalf("KeyByHash = %+v, %v", got, err)
	}
	list, err := s.KeysByOwner(ctx, keystore.PasswordUser("alice"))
	if err != nil || len(list) != 2 || list[0].ID != a1.ID || list[1].ID != a2.ID {
		t.Fatalf("KeysByOwner(alice) = %v, %v; want a1, a2 oldest first", list, err)
	}
	if list, _ := s.KeysByOwner(ctx, keystore.PasswordUser("ali")); len(list) != 0 {
		t.Fatalf("prefix of a username matched: %v", list)
	}
	if _, err := s.DeleteKey(ctx, a1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeyByHash(ctx, a1.Hash, ""); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("deleted key found: %v", err)
	}
	if _, err := s.DeleteKey(ctx, a1.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if list, _ := s.KeysByOwner(ctx, keystore.PasswordUser("alice")); len(list) != 1 {
		t.Fatalf("owner index not updated: %v", list)
	}
}

func TestBoltRefusesDuplicates(t *testing.T) {
	s, _ := openTestBolt(t)
	ctx := context.Background()
	k := testKey(t, "alice", time.Now())
	if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sameID := testKey(t, "alice", time.Now())
	sameID.ID = k.ID
	sameHash := testKey(t, "alice", time.Now())
	sameHash.Hash = k.Hash
	for _, dup := range []keystore.Key{sameID, sameHash} {
		if err := s.CreateKey(ctx, dup, keystore.CreateOptions{}); !errors.Is(err, keystore.ErrExists) {
			t.Fatalf("duplicate accepted: %v", err)
		}
	}
}

func TestBoltDurableAcrossReopen(t *testing.T) {
	s, path := openTestBolt(t)
	ctx := context.Background()
	k := testKey(t, "alice", time.Now())
	if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	used := time.Now().Add(time.Minute).Truncate(time.Microsecond)
	if err := s.TouchKeys(ctx, map[string]time.Time{k.ID: used, "gone": used}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, keystore.User{Name: "bob", PasswordHash: "$2a$10$x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.KeyByHash(ctx, k.Hash, "")
	if err != nil || !got.LastUsed.Equal(used) {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	// An older time never moves last_used back.
	if err := s2.TouchKeys(ctx, map[string]time.Time{k.ID: used.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s2.KeyByHash(ctx, k.Hash, ""); !got.LastUsed.Equal(used) {
		t.Fatalf("last_used moved back to %v", got.LastUsed)
	}
	if u, err := s2.User(ctx, "bob"); err != nil || u.PasswordHash != "$2a$10$x" {
		t.Fatalf("user after reopen: %+v, %v", u, err)
	}
	if _, err := s2.User(ctx, "nobody"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestBoltLockedFileFailsFast(t *testing.T) {
	_, path := openTestBolt(t)
	start := time.Now()
	_, err := Open(path, 200*time.Millisecond)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("second open hung for %v", waited)
	}
}

func TestBoltRecordsAndChecksSchemaVersion(t *testing.T) {
	s, path := openTestBolt(t)
	err := s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(metaSchemaVersion)
		if binary.BigEndian.Uint64(v) != schemaVersion {
			return fmt.Errorf("schema version %x", v)
		}
		return tx.Bucket(bucketMeta).Put(metaSchemaVersion, binary.BigEndian.AppendUint64(nil, schemaVersion+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if _, err := Open(path, time.Second); err == nil {
		t.Fatal("file from a newer schema opened")
	}
}

func TestBoltConcurrentCreates(t *testing.T) {
	s, _ := openTestBolt(t)
	ctx := context.Background()
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			owner := fmt.Sprintf("user%d", w%4)
			for range each {
				errs <- s.CreateKey(ctx, testKey(t, owner, time.Now()), keystore.CreateOptions{})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for u := range 4 {
		list, err := s.KeysByOwner(ctx, keystore.PasswordUser(fmt.Sprintf("user%d", u)))
		if err != nil {
			t.Fatal(err)
		}
		total += len(list)
	}
	if total != workers*each {
		t.Fatalf("stored %d keys, want %d", total, workers*each)
	}
}

func TestBoltConcurrentDuplicatesOneWins(t *testing.T) {
	s, _ := openTestBolt(t)
	k := testKey(t, "alice", time.Now())
	var wg sync.WaitGroup
	results := make(chan error, 8)
	for range 8 {
		wg.Go(func() { results <- s.CreateKey(context.Background(), k, keystore.CreateOptions{}) })
	}
	wg.Wait()
	close(results)
	ok := 0
	for err := range results {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, keystore.ErrExists):
			t.Fatal(err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 8 identical creates succeeded, want 1", ok)
	}
}

func TestBoltClosed(t *testing.T) {
	s, _ := openTestBolt(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(context.Background(), testKey(t, "a", time.Now()), keystore.CreateOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("create after close: %v", err)
	}
}

// BenchmarkCreateKeyParallel measures durable minting with concurrent
// callers sharing commits.
func BenchmarkCreateKeyParallel(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "keys.db"), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	kr := keystore.NewKeyring(s, keystore.Options{})
	defer kr.Close()
	b.SetParallelism(32) // 64 goroutines on 2 cores
	b.ReportAllocs()
	commits := commitCount(b, s)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := kr.Mint(context.Background(), operatorFor("bench"), keystore.KeyRequest{Title: "t"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
	b.ReportMetric(float64(b.N)/float64(commitCount(b, s)-commits), "keys/commit")
}

// commitCount is how many write transactions s has committed.
func commitCount(tb testing.TB, s *Store) int {
	var n int
	if err := s.db.View(func(tx *bolt.Tx) error { n = tx.ID(); return nil }); err != nil {
		tb.Fatal(err)
	}
	return n
}

// A group commit waits only for requests it has reason to expect: the
// previous commit's clients, about to mint again, and the others queued
// meanwhile. A lone client, or a few, is never held back, and the wait is
// capped.
func TestCommitTarget(t *testing.T) {
	for _, c := range []struct {
		name          string
		last, queued  int
		have, waitFor int // waitFor 0: no wait
	}{
		{"first request", 0, 0, 1, 0},
		{"a lone client", 1, 0, 1, 0},
		{"three clients, all in", 3, 0, 3, 0},
		{"three clients, one in", 3, 0, 1, 0},
		{"16 clients, all back", 16, 0, 16, 0},
		{"16 clients, 5 back", 16, 0, 5, 16},
		{"64 clients in two halves", 32, 32, 33, 64},
		{"64 clients in one commit", 64, 0, 1, 64},
		{"more clients than a commit waits for", 64, 100, 100, 0},
		{"a burst queued behind a small commit", 4, 200, 200, 0},
	} {
		want := commitTarget(c.last, c.queued)
		waits := c.have < want
		if waits != (c.waitFor > 0) || waits && want != c.waitFor {
			t.Errorf("%s: after a commit of %d with %d queued, holding %d: target %d, want a wait for %d", c.name, c.last, c.queued, c.have, want, c.waitFor)
		}
	}
}

// Stamped keys' digests append to their index: a group commit of 64 new
// keys into a store of 20 000 materialises and writes a few nodes at the
// index's end, where unstamped digests, random, touch a leaf each.
func TestStampedDigestsAppendToTheIndex(t *testing.T) {
	nodesPerCommit := func(stamped bool) (nodes, writes int64) {
		s, _ := openTestBolt(t)
		for range 200 {
			commitKeys(t, s, stamped, 100)
		}
		before := s.db.Stats().TxStats
		commitKeys(t, s, stamped, 64)
		after := s.db.Stats().TxStats
		return after.GetNodeCount() - before.GetNodeCount(), after.GetWrite() - before.GetWrite()
	}
	stampedNodes, stampedWrites := nodesPerCommit(true)
	randomNodes, randomWrites := nodesPerCommit(false)
	t.Logf("64 keys into 20 000: stamped %d nodes, %d page writes; unstamped %d nodes, %d page writes",
		stampedNodes, stampedWrites, randomNodes, randomWrites)
	if stampedNodes*4 > randomNodes || stampedWrites*4 > randomWrites {
		t.Fatalf("stamped digests touch %d nodes and %d pages, unstamped %d and %d: want a quarter or less",
			stampedNodes, stampedWrites, randomNodes, randomWrites)
	}
	s, _ := openTestBolt(t)
	commitKeys(t, s, true, 10)
	err := s.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketHashes).Stats().KeyN; n != 0 {
			return fmt.Errorf("%d stamped digests in the unstamped index", n)
		}
		if n := tx.Bucket(bucketStamped).Stats().KeyN; n != 10 {
			return fmt.Errorf("%d digests in the stamped index, want 10", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkDigestOnlyLookup finds a key by its digest alone, as an
// operator's lookup or leak report by SHA-256 does, in a store of 2·10⁵
// stamped keys: a read of the unstamped index, then a walk of the stamped
// one (the key sought is the newest, so the walk is whole).
func BenchmarkDigestOnlyLookup(b *testing.B) {
	const keys = 200_000
	s, _ := openTestBolt(b)
	var last keystore.Key
	for range keys / 1000 {
		last = commitKeys(b, s, true, 1000)
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if k, err := s.KeyByHash(ctx, last.Hash, ""); err != nil || k.ID != last.ID {
			b.Fatalf("KeyByHash = %+v, %v", k, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/keys, "ns/key-scanned")
}

// commitKeys commits n new keys of alice in one group commit, as the
// writer would, and returns the last.
func commitKeys(tb testing.TB, s *Store, stamped bool, n int) keystore.Key {
	tb.Helper()
	batch := make([]createRequest, n)
	for i := range batch {
		k := testKey(tb, "alice", time.Now())
		k.Stamped = stamped
		batch[i] = newCreateRequest(k, keystore.CreateOptions{})
	}
	s.commitCreates(batch)
	for _, req := range batch {
		if err := <-req.done; err != nil {
			tb.Fatal(err)
		}
	}
	return batch[n-1].key
}

// One group commit refuses a key whose id an earlier key of the same
// commit took, after that key's record is written in the transaction, and
// a key whose digest an earlier key of the commit has, before the index
// is written at its end.
func TestOneCommitRefusesItsOwnDuplicates(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "keys.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := commitKeys(t, s, true, 100) // the store is not empty
	var batch []createRequest
	for range 64 {
		k := testKey(t, "alice", time.Now())
		k.Stamped = true
		batch = append(batch, newCreateRequest(k, keystore.CreateOptions{}))
	}
	sameID := testKey(t, "bob", time.Now())
	sameID.ID, sameID.Stamped = batch[10].key.ID, true
	sameDigest := testKey(t, "bob", time.Now())
	sameDigest.Hash, sameDigest.Stamped = batch[20].key.Hash, true
	oldDigest := testKey(t, "bob", time.Now())
	// (A key's text holds its stamp: one digest never has two.)
	oldDigest.ID, oldDigest.Hash, oldDigest.Stamped = before.ID[:keystore.StampLen]+oldDigest.ID[keystore.StampLen:], before.Hash, true
	batch = append(batch, newCreateRequest(batch[30].key, keystore.CreateOptions{}),
		newCreateRequest(sameID, keystore.CreateOptions{}), newCreateRequest(sameDigest, keystore.CreateOptions{}),
		newCreateRequest(oldDigest, keystore.CreateOptions{}))
	s.commitCreates(batch)
	for i, req := range batch {
		err := <-req.done
		if i < 64 && err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if i >= 64 && !errors.Is(err, keystore.ErrExists) {
			t.Fatalf("duplicate %d: %v, want ErrExists", i-64, err)
		}
	}
	for _, i := range []int{10, 20, 30} {
		k, err := s.KeyByHash(context.Background(), batch[i].key.Hash, batch[i].key.ID[:keystore.StampLen])
		if err != nil || k.ID != batch[i].key.ID || k.Owner != batch[i].key.Owner {
			t.Fatalf("key %d after its duplicates: %+v, %v", i, k, err)
		}
	}
	if all, _ := s.Keys(context.Background()); len(all) != 164 {
		t.Fatalf("%d keys, want 164", len(all))
	}
}
