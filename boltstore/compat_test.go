package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// testdata/store-v1.db was written by the release before owners had
// sources: a stored user bob, a config user alice and a token client, each
// with one key. Its owners are password users.
var v1Keys = map[string]string{
	"alice":             "sk-AajV0fq4KbhNIJPHPVTxvyWym3sKu8wVMsUQhKSvEY0ULd55",
	"bob":               "sk-JglgqJiRl6rRlk9WgtDnbzAAxenND1xtvdbIN1Tv6v0tq6jT",
	"legacy-jwt-client": "sk-35TDWEbSILOtrjcTxe5zgplUmzBfivwlDhpo6zII1R3UBMAu",
}

// openFixture opens a copy of a store file from testdata.
func openFixture(t *testing.T, name string) *Store {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "apikeys.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestOpensStoreWrittenByV1(t *testing.T) {
	s := openFixture(t, "store-v1.db")
	kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour, Policy: keystore.Policy{ConfigUsers: map[string]keystore.UserRules{"alice": {Scopes: []string{"read"}}}}})
	defer kr.Close()
	ctx := context.Background()
	for _, name := range []string{"alice", "bob"} {
		k, err := kr.VerifyWithin(ctx, v1Keys[name], nil, "")
		if err != nil || k.Owner != keystore.PasswordUser(name) || k.Title != "made by v1" {
			t.Fatalf("%s's v1 key: %+v, %v", name, k, err)
		}
		if keys, _ := kr.KeysByOwner(ctx, keystore.PasswordUser(name)); len(keys) != 1 || keys[0].Orphaned {
			t.Fatalf("%s's keys: %+v", name, keys)
		}
	}
	// A token client's key was filed under a bare name, like a password
	// user's; no such user exists, so it is refused and listed as orphaned.
	if _, err := kr.VerifyWithin(ctx, v1Keys["legacy-jwt-client"], nil, ""); !errors.Is(err, keystore.ErrOrphaned) {
		t.Fatalf("v1 key of a name that is no password user: %v", err)
	}
	keys, _ := kr.KeysByOwner(ctx, keystore.PasswordUser("legacy-jwt-client"))
	if len(keys) != 1 || !keys[0].Orphaned {
		t.Fatalf("listing: %+v", keys)
	}
	// bob's keys still go with him.
	if removed, err := kr.RemoveUser(ctx, "bob"); err != nil || len(removed) != 1 {
		t.Fatalf("RemoveUser(bob) = %d keys, %v", len(removed), err)
	}
}

// testdata/store-v1-unchecked-names.db was written by the release that
// did not check names: token identities stored as they came, one with a
// NUL and two with the separator that the stores' owner indexes use
// between a source and a name.
var v1UncheckedKeys = map[string]string{
	"carol":                        "sk-1OBzGK3jxqT5Xu5kvIjNIMPr08RRPYEEv3oLMzD6ck4XUoz0",
	"carol\x00x":                   "sk-34WWkHf7yyZZmhC0cnsFE4JvWb047My0hGnBv6gcoC3YbaPA",
	"service\x1fdeploy":            "sk-7bB3l4fn0GgZcouB6sw5XRxzHGEJHyLj88YvSWCrVh4dzYda",
	"jwt:https://a.example\x1fceo": "sk-ZXGUHGbwDLMhKnMAiBagPn3WQRyp0XsTv7t1Zru17w2W38bE",
}

// Old names never turn into owners of another source, and never break
// the listings of the owners whose names they extend.
func TestUncheckedOldNamesStayPasswordUsers(t *testing.T) {
	s := openFixture(t, "store-v1-unchecked-names.db")
	kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour, Policy: keystore.Policy{
		ConfigUsers: map[string]keystore.UserRules{"carol": {}},
		Sources:     map[string]keystore.SourceRules{"jwt:https://a.example": {}},
	}})
	defer kr.Close()
	ctx := context.Background()
	for name, secret := range v1UncheckedKeys {
		k, err := kr.VerifyWithin(ctx, secret, nil, "")
		if name == "carol" {
			if err != nil {
				t.Fatalf("carol's key: %v", err)
			}
			continue
		}
		if !errors.Is(err, keystore.ErrOrphaned) {
			t.Fatalf("the key stored for %q: %+v, %v; want it refused as orphaned", name, k, err)
		}
	}
	for _, o := range []keystore.Owner{keystore.Service("deploy"), {Source: "jwt:https://a.example", Name: "ceo"}} {
		if keys, err := kr.KeysByOwner(ctx, o); err != nil || len(keys) != 0 {
			t.Fatalf("%v lists %+v, %v", o, keys, err)
		}
		if removed, err := kr.RevokeOwner(ctx, o); err != nil || len(removed) != 0 {
			t.Fatalf("revoking %v removed %+v, %v", o, removed, err)
		}
	}
	keys, err := kr.KeysByOwner(ctx, keystore.PasswordUser("carol"))
	if err != nil || len(keys) != 1 || keys[0].Owner != keystore.PasswordUser("carol") {
		t.Fatalf("carol's listing: %+v, %v", keys, err)
	}
	removed, err := kr.RevokeOwner(ctx, keystore.PasswordUser("carol"))
	if err != nil || len(removed) != 1 {
		t.Fatalf("revoking carol: %+v, %v", removed, err)
	}
	// The operator can still find and revoke the odd ones.
	all, _ := kr.Keys(ctx)
	if len(all) != 3 {
		t.Fatalf("%d keys left, want the three odd ones", len(all))
	}
	for _, k := range all {
		if !k.Orphaned {
			t.Fatalf("%+v is not listed as orphaned", k)
		}
		if _, err := kr.Delete(ctx, keystore.Actor{Operator: true}, k.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// A v1 file is brought up to the current schema when opened: its keys
// stay where they were found, and keys minted since are stamped and found
// by the key and by digest alone, beside them.
func TestV1StoreTakesStampedKeys(t *testing.T) {
	s := openFixture(t, "store-v1.db")
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(metaSchemaVersion)); v != schemaVersion {
			return fmt.Errorf("schema version %d after opening, want %d", v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour, Policy: keystore.Policy{ConfigUsers: map[string]keystore.UserRules{"alice": {}}}})
	defer kr.Close()
	ctx := context.Background()
	m, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.PasswordUser("alice")}, keystore.KeyRequest{Title: "new"})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Stamped || keystore.StampOf(m.Secret, keystore.DefaultPrefix) != m.ID[:keystore.StampLen] {
		t.Fatalf("minted %q (id %s, stamped %v): want its id's stamp", m.Secret, m.ID, m.Stamped)
	}
	for _, key := range []string{v1Keys["alice"], m.Secret} {
		if k, err := kr.VerifyWithin(ctx, key, nil, ""); err != nil || k.Owner != keystore.PasswordUser("alice") {
			t.Fatalf("verify %s: %+v, %v", keystore.Preview(key, keystore.DefaultPrefix), k, err)
		}
	}
	found, err := kr.KeysByHash(ctx, []keystore.Hash{keystore.HashKey(v1Keys["bob"]), keystore.HashKey(m.Secret)})
	if err != nil || found[0].Owner != keystore.PasswordUser("bob") || found[1].ID != m.ID {
		t.Fatalf("KeysByHash = %+v, %v", found, err)
	}
}
