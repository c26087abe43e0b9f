package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMintLimitPerOwner(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	var wg sync.WaitGroup
	var ok, limited atomic.Int64
	for range 10 {
		wg.Go(func() {
			_, err := kr.Mint(ctx, "alice", MintOptions{MaxPerOwner: 3})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrLimit):
				limited.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 3 || limited.Load() != 7 {
		t.Fatalf("%d minted, %d limited; want 3 and 7", ok.Load(), limited.Load())
	}
	if _, err := kr.Mint(ctx, "bob", MintOptions{MaxPerOwner: 3}); err != nil {
		t.Fatalf("another owner is limited too: %v", err)
	}
}

func TestRotate(t *testing.T) {
	now := time.Now()
	var offset atomic.Int64
	kr, _ := newTestKeyring(t, Options{Now: func() time.Time { return now.Add(time.Duration(offset.Load())) }})
	ctx := context.Background()
	old, _ := kr.Mint(ctx, "alice", MintOptions{Title: "ci", Scopes: []string{"read"}})
	if _, err := kr.Verify(ctx, old.Secret); err != nil { // cached
		t.Fatal(err)
	}

	next, was, err := kr.Rotate(ctx, old.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if was.ID != old.ID || next.ID == old.ID || next.Owner != "alice" || next.Title != "ci" || !next.HasScopes([]string{"read"}) {
		t.Fatalf("rotated %+v from %+v", next.Key, was)
	}
	for _, s := range []string{old.Secret, next.Secret} {
		if _, err := kr.Verify(ctx, s); err != nil {
			t.Fatalf("within grace: %v", err)
		}
	}
	offset.Store(int64(time.Minute))
	if _, err := kr.Verify(ctx, old.Secret); !errors.Is(err, ErrExpired) {
		t.Fatalf("old key after grace: %v", err)
	}
	if _, err := kr.Verify(ctx, next.Secret); err != nil {
		t.Fatalf("new key after grace: %v", err)
	}

	// Without grace the old key is gone at once.
	third, _, err := kr.Rotate(ctx, next.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Verify(ctx, next.Secret); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotated-out key: %v", err)
	}
	if _, err := kr.Verify(ctx, third.Secret); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kr.Rotate(ctx, "nosuchid", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotate unknown: %v", err)
	}
}

func TestRotateGraceNeverExtendsExpiry(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	expires := time.Now().Add(time.Minute).Truncate(time.Microsecond)
	old, _ := kr.Mint(ctx, "alice", MintOptions{Expires: expires})
	_, _, err := kr.Rotate(ctx, old.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := kr.KeyByID(ctx, old.ID)
	if !k.Expires.Equal(expires) {
		t.Fatalf("grace moved expiry from %v to %v", expires, k.Expires)
	}
}

func TestSetDisabled(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, "alice", MintOptions{Title: "t"})
	if _, err := kr.Verify(ctx, m.Secret); err != nil {
		t.Fatal(err)
	}
	k, err := kr.SetDisabled(ctx, m.ID, true)
	if err != nil || !k.Disabled || k.Title != "t" || k.Hash != m.Hash {
		t.Fatalf("SetDisabled = %+v, %v", k, err)
	}
	if _, err := kr.Verify(ctx, m.Secret); !errors.Is(err, ErrDisabled) {
		t.Fatalf("disabled key (was cached): %v", err)
	}
	if _, err := kr.SetDisabled(ctx, m.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Verify(ctx, m.Secret); err != nil {
		t.Fatalf("re-enabled key: %v", err)
	}
	if _, err := kr.SetDisabled(ctx, "nosuchid", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disable unknown: %v", err)
	}
}

func TestUsersAndRemoval(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	s := kr.Store()
	ctx := context.Background()
	for _, name := range []string{"bob", "alice"} {
		if err := s.CreateUser(ctx, User{Name: name, PasswordHash: "h1", Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateUser(ctx, User{Name: "bob", PasswordHash: "h"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	if err := s.SetPassword(ctx, "bob", "h2"); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.User(ctx, "bob"); u.PasswordHash != "h2" || u.Created.IsZero() {
		t.Fatalf("after SetPassword: %+v", u)
	}
	if err := s.SetPassword(ctx, "nobody", "h"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetPassword unknown: %v", err)
	}
	users, _ := s.Users(ctx)
	if len(users) != 2 || users[0].Name != "alice" || users[1].Name != "bob" {
		t.Fatalf("Users = %+v", users)
	}

	bobKey, _ := kr.Mint(ctx, "bob", MintOptions{})
	aliceKey, _ := kr.Mint(ctx, "alice", MintOptions{})
	if _, err := kr.Verify(ctx, bobKey.Secret); err != nil {
		t.Fatal(err)
	}
	removed, err := kr.RemoveUser(ctx, "bob")
	if err != nil || len(removed) != 1 || removed[0].ID != bobKey.ID {
		t.Fatalf("RemoveUser = %+v, %v", removed, err)
	}
	if _, err := kr.Verify(ctx, bobKey.Secret); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed user's key: %v", err)
	}
	if _, err := kr.Verify(ctx, aliceKey.Secret); err != nil {
		t.Fatalf("other user's key: %v", err)
	}
	if _, err := kr.RemoveUser(ctx, "bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	all, _ := kr.Keys(ctx)
	if len(all) != 1 || all[0].ID != aliceKey.ID {
		t.Fatalf("Keys = %+v", all)
	}
}

func TestUpdateKeyKeepsIdentity(t *testing.T) {
	s, _ := openTestBolt(t)
	ctx := context.Background()
	k := testKey(t, "alice", time.Now())
	if err := s.CreateKey(ctx, k, 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.UpdateKey(ctx, k.ID, func(k *Key) error {
		k.Owner, k.ID, k.Title = "mallory", "other", "renamed"
		return nil
	})
	if err != nil || got.Owner != "alice" || got.ID != k.ID || got.Title != "renamed" {
		t.Fatalf("UpdateKey = %+v, %v", got, err)
	}
	boom := errors.New("no")
	if _, err := s.UpdateKey(ctx, k.ID, func(*Key) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
}
