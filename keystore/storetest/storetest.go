// Package storetest is the conformance suite every keystore.Store backend
// passes, so that all backends keep the semantics the gateway relies on.
package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Opener returns an empty store for one subtest; the suite does not close
// it.
type Opener func(t *testing.T) keystore.Store

// Run runs the whole suite against stores from open.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, keystore.Store)
	}{
		{"CreateAndLookup", testCreateAndLookup},
		{"RefusesDuplicates", testRefusesDuplicates},
		{"ConcurrentDuplicatesOneWins", testConcurrentDuplicatesOneWins},
		{"ConcurrentSameDigestOneWins", testConcurrentSameDigestOneWins},
		{"LimitPerOwner", testLimitPerOwner},
		{"ConcurrentLimitHolds", testConcurrentLimitHolds},
		{"ListsOldestFirst", testListsOldestFirst},
		{"UpdateKeepsIdentity", testUpdateKeepsIdentity},
		{"Rotate", testRotate},
		{"Delete", testDelete},
		{"TouchKeysOnlyRaises", testTouchKeysOnlyRaises},
		{"RotateRefuses", testRotateRefuses},
		{"ConcurrentRotationsOneWins", testConcurrentRotationsOneWins},
		{"RotationsWithGraceCountTowardTheLimit", testRotationsWithGraceCountTowardTheLimit},
		{"OwnersOfOtherSourcesAreOthers", testOwnersOfOtherSourcesAreOthers},
		{"DeleteKeysOf", testDeleteKeysOf},
		{"Users", testUsers},
		{"CreditAccounts", testCreditAccounts},
		{"ConcurrentCreditUpdatesAreNotLost", testConcurrentCreditUpdatesAreNotLost},
		{"DeleteUserTakesTheirKeys", testDeleteUserTakesTheirKeys},
		{"KeysOfStoredUsersNeedTheUser", testKeysOfStoredUsersNeedTheUser},
		{"Notices", testNotices},
		{"ConcurrentNoticeLeasesOneWins", testConcurrentNoticeLeasesOneWins},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

var ctx = context.Background()

// Owners of the tests' keys.
var (
	alice = keystore.PasswordUser("alice")
	bob   = keystore.PasswordUser("bob")
	bobby = keystore.PasswordUser("bobby")
	ali   = keystore.PasswordUser("ali")
)

// newKey returns an unsaved key for owner created at the given time,
// stamped as the Keyring mints them.
func newKey(t *testing.T, owner keystore.Owner, created time.Time) keystore.Key {
	t.Helper()
	created = created.Truncate(time.Microsecond)
	secret, id, err := keystore.NewKeyAndID(keystore.DefaultPrefix, created)
	if err != nil {
		t.Fatal(err)
	}
	return keystore.Key{
		ID: id, Hash: keystore.HashKey(secret), Owner: owner, Title: "t",
		Preview: keystore.Preview(secret, keystore.DefaultPrefix), Created: created,
		Stamped: true,
	}
}

// unstampedKey is newKey for a key minted before stamps (or brought in
// from elsewhere): its text begins with random characters.
func unstampedKey(t *testing.T, owner keystore.Owner, created time.Time) keystore.Key {
	t.Helper()
	k := newKey(t, owner, created)
	k.Stamped = false
	return k
}

// stamp is the stamp k's text begins with; a key not stamped begins with
// other characters than its id's.
func stamp(k keystore.Key) string {
	if !k.Stamped {
		return "zzzzzzzzz"[:keystore.StampLen]
	}
	return k.ID[:keystore.StampLen]
}

// race runs n calls of fn at once and returns how many succeeded; each
// failure must be the expected error.
func race(t *testing.T, n int, expected error, fn func(i int) error) (won int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() { errs <- fn(i) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, expected):
			t.Fatalf("unexpected error: %v (want success or %v)", err, expected)
		}
	}
	return won
}

func create(t *testing.T, s keystore.Store, k keystore.Key) keystore.Key {
	t.Helper()
	if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return k
}

func sameKey(a, b keystore.Key) bool {
	return a.ID == b.ID && a.Hash == b.Hash && a.Owner == b.Owner && a.Title == b.Title &&
		a.Preview == b.Preview && a.Created.Equal(b.Created) && a.LastUsed.Equal(b.LastUsed) &&
		a.Expires.Equal(b.Expires) && slices.Equal(a.Scopes, b.Scopes) && a.Disabled == b.Disabled &&
		a.Rotated == b.Rotated && a.Stamped == b.Stamped
}

func ids(keys []keystore.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.ID
	}
	return out
}

// Keys are found by digest with the stamp their text begins with (as a
// presented key gives it), and without (as an operator's digest does),
// whether stamped or not.
func testCreateAndLookup(t *testing.T, s keystore.Store) {
	stamped := newKey(t, alice, time.Now())
	stamped.Title, stamped.Scopes = "ci – déploiement", []string{"read", "write"}
	stamped.Expires = time.Now().Add(time.Hour).Truncate(time.Microsecond)
	create(t, s, stamped)
	unstamped := create(t, s, unstampedKey(t, bob, time.Now()))
	for _, k := range []keystore.Key{stamped, unstamped} {
		for _, st := range []string{stamp(k), ""} {
			byHash, err := s.KeyByHash(ctx, k.Hash, st)
			if err != nil || !sameKey(byHash, k) {
				t.Fatalf("KeyByHash(stamp %q) = %+v, %v; want %+v", st, byHash, err, k)
			}
		}
		byID, err := s.KeyByID(ctx, k.ID)
		if err != nil || !sameKey(byID, k) {
			t.Fatalf("KeyByID = %+v, %v", byID, err)
		}
	}
	other := newKey(t, alice, time.Now())
	for _, st := range []string{stamp(other), stamp(stamped), ""} {
		if _, err := s.KeyByHash(ctx, other.Hash, st); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("unknown hash (stamp %q): %v", st, err)
		}
	}
	if _, err := s.KeyByID(ctx, other.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	got, err := s.KeysByHash(ctx, []keystore.Hash{other.Hash, unstamped.Hash, stamped.Hash, stamped.Hash})
	if err != nil || len(got) != 4 || got[0].ID != "" || !sameKey(got[1], unstamped) || !sameKey(got[2], stamped) || !sameKey(got[3], stamped) {
		t.Fatalf("KeysByHash = %+v, %v; want none, %s, %s, %s", got, err, unstamped.ID, stamped.ID, stamped.ID)
	}
}

func testRefusesDuplicates(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, alice, time.Now()))
	sameID := newKey(t, alice, time.Now())
	sameID.ID = k.ID
	sameHash := newKey(t, bob, k.Created) // the same text has the same stamp
	sameHash.Hash = k.Hash
	old := create(t, s, unstampedKey(t, bob, time.Now()))
	sameOldHash := newKey(t, alice, time.Now())
	sameOldHash.Hash = old.Hash
	// A key brought in from elsewhere, not stamped, whose digest a
	// stamped key has.
	unstampedSameHash := unstampedKey(t, bob, time.Now())
	unstampedSameHash.Hash = k.Hash
	for _, dup := range []keystore.Key{sameID, sameHash, sameOldHash, unstampedSameHash} {
		if err := s.CreateKey(ctx, dup, keystore.CreateOptions{}); !errors.Is(err, keystore.ErrExists) {
			t.Fatalf("duplicate: %v, want ErrExists", err)
		}
	}
	if all, _ := s.Keys(ctx); len(all) != 2 {
		t.Fatalf("%d keys after refused duplicates, want 2", len(all))
	}
}

func testConcurrentDuplicatesOneWins(t *testing.T, s keystore.Store) {
	k := newKey(t, alice, time.Now())
	if won := race(t, 8, keystore.ErrExists, func(int) error { return s.CreateKey(ctx, k, keystore.CreateOptions{}) }); won != 1 {
		t.Fatalf("%d of 8 identical creates succeeded, want 1", won)
	}
}

// Keys with different ids but one digest, created at once (so that they
// may share a transaction), leave one key: the index maps a digest to one
// key.
func testConcurrentSameDigestOneWins(t *testing.T, s keystore.Store) {
	first := newKey(t, alice, time.Now())
	keys := make([]keystore.Key, 8)
	for i := range keys {
		keys[i] = newKey(t, alice, first.Created)
		if i%2 == 1 { // and keys brought in from elsewhere
			keys[i] = unstampedKey(t, alice, time.Now())
		}
		keys[i].Hash = first.Hash
	}
	if won := race(t, 8, keystore.ErrExists, func(i int) error { return s.CreateKey(ctx, keys[i], keystore.CreateOptions{}) }); won != 1 {
		t.Fatalf("%d of 8 creates with one digest succeeded, want 1", won)
	}
	if all, _ := s.Keys(ctx); len(all) != 1 {
		t.Fatalf("%d keys stored for one digest, want 1", len(all))
	}
}

func testLimitPerOwner(t *testing.T, s keystore.Store) {
	var first keystore.Key
	for i := range 2 {
		k := newKey(t, alice, time.Now())
		if err := s.CreateKey(ctx, k, keystore.CreateOptions{MaxPerOwner: 2}); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if i == 0 {
			first = k
		}
	}
	if err := s.CreateKey(ctx, newKey(t, alice, time.Now()), keystore.CreateOptions{MaxPerOwner: 2}); !errors.Is(err, keystore.ErrLimit) {
		t.Fatalf("third key: %v, want ErrLimit", err)
	}
	if err := s.CreateKey(ctx, newKey(t, bob, time.Now()), keystore.CreateOptions{MaxPerOwner: 2}); err != nil {
		t.Fatalf("another owner: %v", err)
	}
	if _, err := s.DeleteKey(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, newKey(t, alice, time.Now()), keystore.CreateOptions{MaxPerOwner: 2}); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}

func testConcurrentLimitHolds(t *testing.T, s keystore.Store) {
	const limit, tries = 5, 16
	race(t, tries, keystore.ErrLimit, func(int) error {
		return s.CreateKey(ctx, newKey(t, alice, time.Now()), keystore.CreateOptions{MaxPerOwner: limit})
	})
	if keys, _ := s.KeysByOwner(ctx, alice); len(keys) != limit {
		t.Fatalf("%d keys after %d concurrent creates with limit %d", len(keys), tries, limit)
	}
}

func testListsOldestFirst(t *testing.T, s keystore.Store) {
	base := time.Now()
	var want []string
	for i, owner := range []keystore.Owner{alice, bob, alice, alice} {
		// Created out of order, listed by creation time.
		k := create(t, s, newKey(t, owner, base.Add(time.Duration(3-i)*time.Second)))
		if owner == alice {
			want = append([]string{k.ID}, want...)
		}
	}
	mine, err := s.KeysByOwner(ctx, alice)
	if err != nil || !slices.Equal(ids(mine), want) {
		t.Fatalf("KeysByOwner = %v, %v; want %v", ids(mine), err, want)
	}
	// An owner whose name extends another's is a different owner.
	if keys, _ := s.KeysByOwner(ctx, ali); len(keys) != 0 {
		t.Fatalf("KeysByOwner(ali) = %v", ids(keys))
	}
	all, err := s.Keys(ctx)
	if err != nil || len(all) != 4 {
		t.Fatalf("Keys = %d, %v", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Created.Before(all[i-1].Created) {
			t.Fatalf("Keys not oldest first: %v", ids(all))
		}
	}
}

func testUpdateKeepsIdentity(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, alice, time.Now()))
	exp := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	got, err := s.UpdateKey(ctx, k.ID, func(k *keystore.Key) error {
		k.Owner, k.ID, k.Hash, k.Stamped = keystore.Service("mallory"), "other", keystore.Hash{}, false
		k.Title, k.Expires, k.Scopes, k.Disabled = "renamed", exp, []string{"read"}, true
		return nil
	})
	if err != nil || got.Owner != alice || got.ID != k.ID || got.Hash != k.Hash || !got.Stamped || got.Title != "renamed" {
		t.Fatalf("UpdateKey = %+v, %v", got, err)
	}
	stored, _ := s.KeyByHash(ctx, k.Hash, stamp(k))
	if !sameKey(stored, got) || !stored.Disabled || !stored.Expires.Equal(exp) {
		t.Fatalf("stored %+v, returned %+v", stored, got)
	}
	boom := errors.New("no")
	if _, err := s.UpdateKey(ctx, k.ID, func(*keystore.Key) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if _, err := s.UpdateKey(ctx, "nope", func(*keystore.Key) error { return nil }); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func testRotate(t *testing.T, s keystore.Store) {
	old := create(t, s, newKey(t, alice, time.Now()))
	next := newKey(t, alice, time.Now())
	retire := time.Now().Add(time.Minute).Truncate(time.Microsecond)
	was, err := s.RotateKey(ctx, old.ID, next, retire, 0)
	if err != nil || !sameKey(was, old) {
		t.Fatalf("RotateKey = %+v, %v", was, err)
	}
	if got, _ := s.KeyByHash(ctx, old.Hash, stamp(old)); !got.Expires.Equal(retire) || !got.Rotated {
		t.Fatalf("old key expires %v (rotated %v), want %v and rotated", got.Expires, got.Rotated, retire)
	}
	if _, err := s.KeyByHash(ctx, next.Hash, stamp(next)); err != nil {
		t.Fatalf("new key: %v", err)
	}
	// Without grace the old key is gone at once.
	third := newKey(t, alice, time.Now())
	if _, err := s.RotateKey(ctx, next.ID, third, time.Time{}, 0); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{stamp(next), ""} {
		if _, err := s.KeyByHash(ctx, next.Hash, st); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("rotated without grace (stamp %q): %v", st, err)
		}
	}
	if _, err := s.KeyByID(ctx, next.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("rotated without grace, by id: %v", err)
	}
	if keys, _ := s.KeysByOwner(ctx, alice); !slices.Equal(ids(keys), []string{old.ID, third.ID}) {
		t.Fatalf("after rotations alice has %v", ids(keys))
	}
	if _, err := s.RotateKey(ctx, "nope", newKey(t, alice, time.Now()), time.Time{}, 0); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("rotate unknown: %v", err)
	}
	// A replacement that collides is refused and changes nothing.
	clash := newKey(t, alice, old.Created)
	clash.Hash = old.Hash
	if _, err := s.RotateKey(ctx, third.ID, clash, time.Time{}, 0); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("colliding replacement: %v", err)
	}
	if _, err := s.KeyByID(ctx, third.ID); err != nil {
		t.Fatalf("a refused rotation removed the key: %v", err)
	}
}

func testDelete(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, alice, time.Now()))
	keep := create(t, s, newKey(t, alice, time.Now()))
	got, err := s.DeleteKey(ctx, k.ID)
	if err != nil || !sameKey(got, k) {
		t.Fatalf("DeleteKey = %+v, %v", got, err)
	}
	if _, err := s.DeleteKey(ctx, k.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	for _, st := range []string{stamp(k), ""} {
		if _, err := s.KeyByHash(ctx, k.Hash, st); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("deleted key by hash (stamp %q): %v", st, err)
		}
	}
	if keys, _ := s.KeysByOwner(ctx, alice); !slices.Equal(ids(keys), []string{keep.ID}) {
		t.Fatalf("after delete alice has %v", ids(keys))
	}
	// Its hash and id may be used again.
	if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
		t.Fatalf("re-create a deleted key: %v", err)
	}
}

func testTouchKeysOnlyRaises(t *testing.T, s keystore.Store) {
	a := create(t, s, newKey(t, alice, time.Now()))
	b := create(t, s, newKey(t, alice, time.Now()))
	gone := create(t, s, newKey(t, alice, time.Now()))
	if _, err := s.DeleteKey(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now().Truncate(time.Microsecond)
	t0 := t1.Add(-time.Minute)
	if err := s.TouchKeys(ctx, map[string]time.Time{a.ID: t1, b.ID: t0, gone.ID: t1}); err != nil {
		t.Fatal(err)
	}
	// Another node reports an older use of a, and a newer one of b.
	if err := s.TouchKeys(ctx, map[string]time.Time{a.ID: t0, b.ID: t1}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []keystore.Key{a, b} {
		got, _ := s.KeyByID(ctx, k.ID)
		if !got.LastUsed.Equal(t1) {
			t.Fatalf("KeyByID(%s).LastUsed = %v, want %v", k.ID, got.LastUsed, t1)
		}
	}
	listed, _ := s.KeysByOwner(ctx, alice)
	all, _ := s.Keys(ctx)
	for _, keys := range [][]keystore.Key{listed, all} {
		if len(keys) != 2 || !keys[0].LastUsed.Equal(t1) || !keys[1].LastUsed.Equal(t1) {
			t.Fatalf("listed last-used times: %+v", keys)
		}
	}
	if _, err := s.KeyByID(ctx, gone.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("touching a deleted key brought it back: %v", err)
	}
	if err := s.TouchKeys(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func testUsers(t *testing.T, s keystore.Store) {
	created := time.Now().Truncate(time.Microsecond)
	for _, name := range []string{"bob", "alice"} {
		if err := s.CreateUser(ctx, keystore.User{Name: name, PasswordHash: "h1", Created: created}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateUser(ctx, keystore.User{Name: "bob", PasswordHash: "h"}); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	got, err := s.UpdateUser(ctx, "bob", func(u *keystore.User) error {
		u.Name, u.Created = "mallory", time.Time{}
		u.PasswordHash, u.Scopes = "h2", []string{"read", "write"}
		return nil
	})
	if err != nil || got.Name != "bob" || got.PasswordHash != "h2" {
		t.Fatalf("UpdateUser = %+v, %v", got, err)
	}
	if u, err := s.User(ctx, "bob"); err != nil || u.PasswordHash != "h2" || !u.Created.Equal(created) ||
		!slices.Equal(u.Scopes, []string{"read", "write"}) {
		t.Fatalf("after UpdateUser: %+v, %v", u, err)
	}
	if _, err := s.UpdateUser(ctx, "nobody", func(*keystore.User) error { return nil }); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("UpdateUser unknown: %v", err)
	}
	for _, bad := range []string{"", "carol\x00x", "a\x1fb", "\xff"} {
		if err := s.CreateUser(ctx, keystore.User{Name: bad, PasswordHash: "h"}); !errors.Is(err, keystore.ErrBadName) {
			t.Fatalf("CreateUser(%q): %v, want ErrBadName", bad, err)
		}
	}
	if _, err := s.User(ctx, "nobody"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	users, _ := s.Users(ctx)
	if len(users) != 2 || users[0].Name != "alice" || users[1].Name != "bob" {
		t.Fatalf("Users = %+v", users)
	}
}

func testDeleteUserTakesTheirKeys(t *testing.T, s keystore.Store) {
	for _, name := range []string{"bob", "bobby"} {
		if err := s.CreateUser(ctx, keystore.User{Name: name, PasswordHash: "h"}); err != nil {
			t.Fatal(err)
		}
	}
	// More keys than fit in one etcd transaction's default operation limit.
	var bobs []string
	for range 50 {
		bobs = append(bobs, create(t, s, newKey(t, bob, time.Now())).ID)
	}
	kept := create(t, s, newKey(t, bobby, time.Now()))
	removed, err := s.DeleteUser(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	got := ids(removed)
	slices.Sort(got)
	slices.Sort(bobs)
	if !slices.Equal(got, bobs) {
		t.Fatalf("DeleteUser removed %d keys, want bob's %d", len(got), len(bobs))
	}
	if all, _ := s.Keys(ctx); !slices.Equal(ids(all), []string{kept.ID}) {
		t.Fatalf("keys left: %v", ids(all))
	}
	if _, err := s.User(ctx, "bob"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("deleted user: %v", err)
	}
	if _, err := s.DeleteUser(ctx, "bob"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func testRotateRefuses(t *testing.T, s keystore.Store) {
	disabled := create(t, s, newKey(t, alice, time.Now()))
	if _, err := s.UpdateKey(ctx, disabled.ID, func(k *keystore.Key) error { k.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	next := newKey(t, alice, time.Now())
	for _, retire := range []time.Time{{}, time.Now().Add(time.Hour)} {
		if _, err := s.RotateKey(ctx, disabled.ID, next, retire, 0); !errors.Is(err, keystore.ErrDisabled) {
			t.Fatalf("rotate a disabled key: %v, want ErrDisabled", err)
		}
	}
	old := create(t, s, newKey(t, alice, time.Now()))
	if _, err := s.RotateKey(ctx, old.ID, next, time.Now().Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	// A key in its grace period cannot start another chain, with or
	// without grace.
	for _, retire := range []time.Time{{}, time.Now().Add(time.Hour)} {
		if _, err := s.RotateKey(ctx, old.ID, newKey(t, alice, time.Now()), retire, 0); !errors.Is(err, keystore.ErrRotated) {
			t.Fatalf("rotate a rotated key: %v, want ErrRotated", err)
		}
	}
	if keys, _ := s.KeysByOwner(ctx, alice); len(keys) != 3 {
		t.Fatalf("refused rotations changed alice's keys: %v", ids(keys))
	}
}

func testConcurrentRotationsOneWins(t *testing.T, s keystore.Store) {
	old := create(t, s, newKey(t, alice, time.Now()))
	const tries = 8
	won := race(t, tries, keystore.ErrRotated, func(int) error {
		_, err := s.RotateKey(ctx, old.ID, newKey(t, alice, time.Now()), time.Now().Add(time.Hour), 0)
		return err
	})
	if keys, _ := s.KeysByOwner(ctx, alice); won != 1 || len(keys) != 2 {
		t.Fatalf("%d of %d concurrent rotations with grace won, alice holds %d keys; want 1 and 2", won, tries, len(keys))
	}
}

func testRotationsWithGraceCountTowardTheLimit(t *testing.T, s keystore.Store) {
	only := create(t, s, newKey(t, alice, time.Now()))
	// With a limit of one, the old key's grace period would make two.
	if _, err := s.RotateKey(ctx, only.ID, newKey(t, alice, time.Now()), time.Now().Add(time.Hour), 1); !errors.Is(err, keystore.ErrLimit) {
		t.Fatalf("rotation with grace at the limit: %v, want ErrLimit", err)
	}
	// Without grace the old key goes as the new one comes.
	if _, err := s.RotateKey(ctx, only.ID, newKey(t, alice, time.Now()), time.Time{}, 1); err != nil {
		t.Fatalf("rotation without grace at the limit: %v", err)
	}
	// Two keys under a limit of three, both rotated with grace at once:
	// one rotation fits, the other is refused.
	b1 := create(t, s, newKey(t, bob, time.Now()))
	b2 := create(t, s, newKey(t, bob, time.Now()))
	won := race(t, 2, keystore.ErrLimit, func(i int) error {
		_, err := s.RotateKey(ctx, []keystore.Key{b1, b2}[i].ID, newKey(t, bob, time.Now()), time.Now().Add(time.Hour), 3)
		return err
	})
	if keys, _ := s.KeysByOwner(ctx, bob); won != 1 || len(keys) != 3 {
		t.Fatalf("%d concurrent rotations won and bob holds %d keys; want 1 and 3", won, len(keys))
	}
}

func testOwnersOfOtherSourcesAreOthers(t *testing.T, s keystore.Store) {
	owners := []keystore.Owner{alice, keystore.Service("alice"), {Source: "jwt:https://idp.example", Name: "alice"}}
	for _, o := range owners {
		if err := s.CreateKey(ctx, newKey(t, o, time.Now()), keystore.CreateOptions{MaxPerOwner: 1}); err != nil {
			t.Fatalf("first key of %v: %v", o, err)
		}
	}
	for _, o := range owners {
		keys, err := s.KeysByOwner(ctx, o)
		if err != nil || len(keys) != 1 || keys[0].Owner != o {
			t.Fatalf("KeysByOwner(%v) = %+v, %v", o, keys, err)
		}
	}
	if err := s.CreateUser(ctx, keystore.User{Name: "alice", PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	removed, err := s.DeleteUser(ctx, "alice")
	if err != nil || len(removed) != 1 || removed[0].Owner != alice {
		t.Fatalf("DeleteUser(alice) removed %+v, %v; want only the password user's key", removed, err)
	}
	if all, _ := s.Keys(ctx); len(all) != 2 {
		t.Fatalf("%d keys left, want the service's and the issuer's", len(all))
	}
}

func testDeleteKeysOf(t *testing.T, s keystore.Store) {
	svc := keystore.Service("backup-job")
	var want []string
	for range 50 { // more than one etcd transaction holds
		want = append(want, create(t, s, newKey(t, svc, time.Now())).ID)
	}
	kept := create(t, s, newKey(t, keystore.Service("backup"), time.Now()))
	removed, err := s.DeleteKeysOf(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	got := ids(removed)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("DeleteKeysOf removed %d keys, want %d", len(got), len(want))
	}
	if all, _ := s.Keys(ctx); !slices.Equal(ids(all), []string{kept.ID}) {
		t.Fatalf("keys left: %v", ids(all))
	}
	if removed, err := s.DeleteKeysOf(ctx, svc); err != nil || len(removed) != 0 {
		t.Fatalf("DeleteKeysOf again = %v, %v", ids(removed), err)
	}
}

func testCreditAccounts(t *testing.T, s keystore.Store) {
	if _, err := s.CreditAccount(ctx, "acct"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown account: %v", err)
	}
	anchor := time.Now().Truncate(time.Microsecond)
	a, err := s.UpdateCredits(ctx, "acct", func(a *keystore.CreditAccount, exists bool) error {
		if exists {
			t.Error("a new account exists")
		}
		a.Balance, a.Anchor, a.Gen = 1000, anchor, 7
		return nil
	})
	if err != nil || a.ID != "acct" || a.Balance != 1000 {
		t.Fatalf("UpdateCredits = %+v, %v", a, err)
	}
	boom := errors.New("no")
	if _, err := s.UpdateCredits(ctx, "acct", func(a *keystore.CreditAccount, exists bool) error {
		if !exists || a.Balance != 1000 {
			t.Errorf("stored account: %+v, exists %v", a, exists)
		}
		a.Balance = 0
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	got, err := s.CreditAccount(ctx, "acct")
	if err != nil || got.Balance != 1000 || !got.Anchor.Equal(anchor) || got.Gen != 7 {
		t.Fatalf("after a refused update: %+v, %v", got, err)
	}
	if _, err := s.UpdateCredits(ctx, "other", func(a *keystore.CreditAccount, _ bool) error { a.Balance = 5; return nil }); err != nil {
		t.Fatal(err)
	}
	all, err := s.CreditAccounts(ctx)
	if err != nil || len(all) != 2 || all[0].ID != "acct" || all[1].ID != "other" || all[1].Balance != 5 {
		t.Fatalf("CreditAccounts = %+v, %v", all, err)
	}
}

func testConcurrentCreditUpdatesAreNotLost(t *testing.T, s keystore.Store) {
	const workers, each = 8, 25
	if _, err := s.UpdateCredits(ctx, "acct", func(a *keystore.CreditAccount, _ bool) error { a.Balance = 1000; return nil }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := s.UpdateCredits(ctx, "acct", func(a *keystore.CreditAccount, _ bool) error { a.Balance -= 3; return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if a, _ := s.CreditAccount(ctx, "acct"); a.Balance != 1000-3*workers*each {
		t.Fatalf("balance %d after %d concurrent spends of 3, want %d", a.Balance, workers*each, 1000-3*workers*each)
	}
}

func testKeysOfStoredUsersNeedTheUser(t *testing.T, s keystore.Store) {
	opts := keystore.CreateOptions{StoredUser: true}
	if err := s.CreateKey(ctx, newKey(t, alice, time.Now()), opts); !errors.Is(err, keystore.ErrUnknownOwner) {
		t.Fatalf("key of a user not in the store: %v", err)
	}
	if err := s.CreateKey(ctx, newKey(t, keystore.Service("alice"), time.Now()), opts); !errors.Is(err, keystore.ErrUnknownOwner) {
		t.Fatalf("StoredUser for a service: %v", err)
	}
	// Keys created while the user is removed are removed with them or
	// not created.
	for round := range 5 {
		if err := s.CreateUser(ctx, keystore.User{Name: "alice", PasswordHash: "h"}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 5 {
					err := s.CreateKey(ctx, newKey(t, alice, time.Now()), opts)
					if err != nil && !errors.Is(err, keystore.ErrUnknownOwner) {
						t.Error(err)
					}
				}
			})
		}
		if _, err := s.DeleteUser(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if keys, _ := s.KeysByOwner(ctx, alice); len(keys) != 0 {
			t.Fatalf("round %d: %d keys outlived their user", round, len(keys))
		}
	}
}

func noticeStore(t *testing.T, s keystore.Store) keystore.NoticeStore {
	t.Helper()
	ns, ok := s.(keystore.NoticeStore)
	if !ok {
		t.Fatalf("%T keeps no notices", s)
	}
	return ns
}

// Notices are named by endpoint and id: queued twice, they are stored
// once, as first written; endpoints do not see each other's. A done
// notice leaves the queue but keeps the event from being queued again
// until it is pruned.
func testNotices(t *testing.T, s keystore.Store) {
	ns := noticeStore(t, s)
	now := time.Now().UTC().Truncate(time.Microsecond)
	first := keystore.Notice{Endpoint: "ep1", ID: "msg_1", Type: "key.leaked", Body: []byte(`{"n":1}`), Created: now, KeepUntil: now.Add(time.Hour)}
	again := first
	again.Body = []byte(`{"n":2}`)
	other := first
	other.Endpoint = "ep10"
	if err := ns.AddNotices(ctx, []keystore.Notice{first, other}); err != nil {
		t.Fatal(err)
	}
	if err := ns.AddNotices(ctx, []keystore.Notice{again}); err != nil {
		t.Fatal(err)
	}
	got, err := ns.Notices(ctx, "ep1")
	if err != nil || len(got) != 1 || string(got[0].Body) != `{"n":1}` || got[0].ID != "msg_1" || got[0].Endpoint != "ep1" || !got[0].Created.Equal(now) {
		t.Fatalf("Notices(ep1) = %+v, %v", got, err)
	}
	leased, err := ns.UpdateNotice(ctx, "ep1", "msg_1", func(n *keystore.Notice) error {
		n.LeaseUntil = now.Add(time.Minute)
		return nil
	})
	if err != nil || !leased.LeaseUntil.Equal(now.Add(time.Minute)) {
		t.Fatalf("UpdateNotice = %+v, %v", leased, err)
	}
	if got, _ := ns.Notices(ctx, "ep1"); len(got) != 1 || !got[0].LeaseUntil.Equal(now.Add(time.Minute)) {
		t.Fatalf("after a lease: %+v", got)
	}
	if _, err := ns.UpdateNotice(ctx, "ep1", "msg_1", func(n *keystore.Notice) error {
		n.Done, n.Body = now, nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Done: out of the queue, and still keeping the event from being
	// queued again.
	if err := ns.AddNotices(ctx, []keystore.Notice{first}); err != nil {
		t.Fatal(err)
	}
	if got, _ := ns.Notices(ctx, "ep1"); len(got) != 0 {
		t.Fatalf("a done event is pending: %+v", got)
	}
	if _, err := ns.UpdateNotice(ctx, "ep1", "msg_1", func(*keystore.Notice) error { return nil }); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("UpdateNotice of a done notice: %v", err)
	}
	if n, err := ns.PruneNotices(ctx, "ep1", now); err != nil || n != 0 {
		t.Fatalf("pruning before KeepUntil: %d, %v", n, err)
	}
	if n, err := ns.PruneNotices(ctx, "ep1", now.Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("pruning after KeepUntil: %d, %v", n, err)
	}
	// Forgotten: the same id may be queued again.
	if err := ns.AddNotices(ctx, []keystore.Notice{first}); err != nil {
		t.Fatal(err)
	}
	if got, _ := ns.Notices(ctx, "ep1"); len(got) != 1 {
		t.Fatalf("after pruning, queued again: %+v", got)
	}
	if got, _ := ns.Notices(ctx, "ep10"); len(got) != 1 {
		t.Fatalf("another endpoint's notices: %+v", got)
	}
}

// Gateways racing to lease one notice: exactly one gets it.
func testConcurrentNoticeLeasesOneWins(t *testing.T, s keystore.Store) {
	ns := noticeStore(t, s)
	now := time.Now()
	if err := ns.AddNotices(ctx, []keystore.Notice{{Endpoint: "ep", ID: "msg", Type: "key.revoked", Created: now, KeepUntil: now.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 16 {
		wg.Go(func() {
			_, err := ns.UpdateNotice(ctx, "ep", "msg", func(n *keystore.Notice) error {
				if n.LeaseUntil.After(time.Now()) {
					return keystore.ErrNoticeBusy
				}
				n.LeaseUntil = time.Now().Add(time.Minute)
				return nil
			})
			switch {
			case err == nil:
				mu.Lock()
				won++
				mu.Unlock()
			case !errors.Is(err, keystore.ErrNoticeBusy):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d of 16 leased the notice, want 1", won)
	}
}
