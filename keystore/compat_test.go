package keystore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testdata/store-v1.db was written by the release before owners had
// sources: a stored user bob, a config user alice and a token client, each
// with one key. Its owners are password users.
var v1Keys = map[string]string{
	"alice":             "sk-AajV0fq4KbhNIJPHPVTxvyWym3sKu8wVMsUQhKSvEY0ULd55",
	"bob":               "sk-JglgqJiRl6rRlk9WgtDnbzAAxenND1xtvdbIN1Tv6v0tq6jT",
	"legacy-jwt-client": "sk-35TDWEbSILOtrjcTxe5zgplUmzBfivwlDhpo6zII1R3UBMAu",
}

func TestOpensStoreWrittenByV1(t *testing.T) {
	data, err := os.ReadFile("testdata/store-v1.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "apikeys.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenBolt(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kr := NewKeyring(s, Options{FlushInterval: time.Hour, Policy: Policy{ConfigUsers: map[string][]string{"alice": {"read"}}}})
	defer kr.Close()
	ctx := context.Background()
	for _, name := range []string{"alice", "bob"} {
		k, err := kr.Verify(ctx, v1Keys[name])
		if err != nil || k.Owner != PasswordUser(name) || k.Title != "made by v1" {
			t.Fatalf("%s's v1 key: %+v, %v", name, k, err)
		}
		if keys, _ := kr.KeysByOwner(ctx, PasswordUser(name)); len(keys) != 1 || keys[0].Orphaned {
			t.Fatalf("%s's keys: %+v", name, keys)
		}
	}
	// A token client's key was filed under a bare name, like a password
	// user's; no such user exists, so it is refused and listed as orphaned.
	if _, err := kr.Verify(ctx, v1Keys["legacy-jwt-client"]); !errors.Is(err, ErrOrphaned) {
		t.Fatalf("v1 key of a name that is no password user: %v", err)
	}
	keys, _ := kr.KeysByOwner(ctx, PasswordUser("legacy-jwt-client"))
	if len(keys) != 1 || !keys[0].Orphaned {
		t.Fatalf("listing: %+v", keys)
	}
	// bob's keys still go with him.
	if removed, err := kr.RemoveUser(ctx, "bob"); err != nil || len(removed) != 1 {
		t.Fatalf("RemoveUser(bob) = %d keys, %v", len(removed), err)
	}
}
