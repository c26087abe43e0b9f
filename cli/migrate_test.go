package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/ops"
)

func TestMigrateBoltToEtcd(t *testing.T) {
	ctx := context.Background()
	src, err := boltstore.Open(filepath.Join(t.TempDir(), "keys.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	kr := keystore.NewKeyring(src, keystore.Options{Policy: keystore.Policy{
		Sources: map[string]keystore.SourceRules{"jwt:https://idp.example": {}},
	}})
	if err := src.CreateUser(ctx, keystore.User{Name: "alice", PasswordHash: "$argon2id$x", Scopes: []string{"read"}, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// The same name from three sources: three owners, which must stay apart.
	owners := []keystore.Owner{keystore.PasswordUser("alice"), keystore.Service("alice"), {Source: "jwt:https://idp.example", Name: "alice"}}
	var minted []keystore.Minted
	for i := range 40 {
		m, err := kr.Mint(ctx, keystore.Actor{Owner: owners[i%3], Operator: true}, keystore.KeyRequest{
			Title: fmt.Sprintf("key %d", i), Scopes: []string{"read"}, Lifetime: time.Hour,
		})
		if err != nil {
			t.Fatal(err)
		}
		minted = append(minted, m)
	}
	if _, _, err := kr.ChangeDisabled(ctx, minted[0].ID, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kr.Rotate(ctx, keystore.Actor{Operator: true}, minted[2].ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	// A key of a user declared in the source's config, not its store.
	carol, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service("x"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.DeleteKey(ctx, carol.ID); err != nil {
		t.Fatal(err)
	}
	carol.Owner, carol.Plan = keystore.PasswordUser("carol"), "pro"
	if _, err := src.UpdateCredits(ctx, minted[4].ID, func(a *keystore.CreditAccount, _ bool) error {
		a.Balance, a.Anchor, a.Gen = 42, time.Now().Truncate(time.Microsecond), 3
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := src.CreateKey(ctx, carol.Key, keystore.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyWithin(ctx, minted[1].Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := kr.Close(); err != nil { // writes minted[1]'s last use
		t.Fatal(err)
	}

	// The destination is the store of a Caddyfile, as the command reads it.
	c := etcdtest.Start(t, 1)
	cfgPath := filepath.Join(t.TempDir(), "Caddyfile")
	cfg := fmt.Sprintf("{\n\tapikeys {\n\t\tstore etcd %s {\n\t\t\tprefix /migrated/\n\t\t}\n\t}\n}\n:0 {\n\trespond ok\n}\n", c.Endpoints()[0])
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	dst, dstUsers, release, err := openConfiguredStore(cfgPath, "caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = release() }()

	m, err := ops.Copy(ctx, src, dst, dstUsers)
	if err != nil || !reflect.DeepEqual(m, ops.Copied{UsersCopied: 1, KeysCopied: 42, CreditsCopied: 1, KeysOrphaned: 1, Orphans: []string{"carol"}}) {
		t.Fatalf("first copy: %+v, %v", m, err)
	}
	// carol is declared in the config of the destination.
	m, err = ops.Copy(ctx, src, dst, []string{"carol"})
	if err != nil || !reflect.DeepEqual(m, ops.Copied{UsersPresent: 1, KeysPresent: 42, CreditsPresent: 1}) {
		t.Fatalf("second copy: %+v, %v", m, err)
	}

	want, _ := src.Keys(ctx)
	got, err := dst.Keys(ctx)
	if err != nil || len(got) != len(want) {
		t.Fatalf("destination holds %d keys (%v), want %d", len(got), err, len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.ID != g.ID || w.Hash != g.Hash || w.Owner != g.Owner || w.Title != g.Title || w.Preview != g.Preview ||
			!w.Created.Equal(g.Created) || !w.LastUsed.Equal(g.LastUsed) || !w.Expires.Equal(g.Expires) ||
			!slices.Equal(w.Scopes, g.Scopes) || w.Disabled != g.Disabled || w.Rotated != g.Rotated ||
			w.Plan != g.Plan || w.Account != g.Account {
			t.Fatalf("key %d differs:\n src %+v\n dst %+v", i, w, g)
		}
	}
	if got[1].LastUsed.IsZero() || !got[0].Disabled || !got[2].Rotated {
		t.Fatal("last use, disabled or rotated state was not copied")
	}
	for _, o := range owners {
		if keys, _ := dst.KeysByOwner(ctx, o); len(keys) != 14 && len(keys) != 13 {
			t.Fatalf("%v holds %d keys after the copy", o, len(keys))
		}
	}
	// The copied keys verify against the destination.
	dkr := keystore.NewKeyring(dst, keystore.Options{})
	defer dkr.Close()
	if k, err := dkr.VerifyWithin(ctx, minted[3].Secret, nil, ""); err != nil || k.ID != minted[3].ID {
		t.Fatalf("a copied key: %v", err)
	}
	if a, err := dst.CreditAccount(ctx, minted[4].ID); err != nil || a.Balance != 42 || a.Gen != 3 {
		t.Fatalf("copied credit balance: %+v, %v", a, err)
	}
	if got[41].Plan != "pro" {
		t.Fatalf("a key's plan was not copied: %+v", got[41])
	}
	if u, err := dst.User(ctx, "alice"); err != nil || u.PasswordHash != "$argon2id$x" || !slices.Equal(u.Scopes, []string{"read"}) {
		t.Fatalf("copied user: %+v, %v", u, err)
	}
}

func TestOpenConfiguredStoreErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ cfg, want string }{
		"no apikeys app":  {":0 {\n\trespond ok\n}\n", "no apikeys app"},
		"unknown backend": {`{"apps": {"apikeys": {"store": {"backend": "nosuch"}}}}`, "nosuch"},
		"etcd unreachable": {`{"apps": {"apikeys": {"store": {"backend": "etcd", "endpoints": ["http://127.0.0.1:1"], "dial_timeout": "300ms"}}}}`,
			"did not answer"},
	} {
		t.Run(name, func(t *testing.T) {
			path, adapter := filepath.Join(dir, "Caddyfile"), "caddyfile"
			if strings.HasPrefix(tc.cfg, "{\"") {
				path, adapter = filepath.Join(dir, "caddy.json"), ""
			}
			if err := os.WriteFile(path, []byte(tc.cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := openConfiguredStore(path, adapter)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("openConfiguredStore = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
