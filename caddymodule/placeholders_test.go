package caddymodule

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// A verified key answers its placeholders by their prefixed names, from
// values built once when it was cached.
func TestKeyPlaceholders(t *testing.T) {
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "keys.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour})
	defer kr.Close()
	ctx := context.Background()
	m, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service("svc"), Operator: true}, keystore.KeyRequest{Title: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := kr.VerifyWithin(ctx, m.Secret, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	get := keyPlaceholderFunc(k)
	for name, want := range map[string]string{
		"http.auth.user.id": "svc", "http.auth.user.key_id": m.ID, "http.auth.user.key_title": "ci",
		"http.auth.user.source": keystore.SourceService,
	} {
		t.Run(name, func(t *testing.T) {
			if v, ok := get(name); !ok || v != want {
				t.Errorf("%s = %v, %v; want %q", name, v, ok, want)
			}
		})
	}
	if _, ok := get("http.auth.user.key_scopes"); ok {
		t.Error("key_scopes answered for a key without scopes")
	}
	if _, ok := get("http.request.uri"); ok {
		t.Error("answered a placeholder that is not the key's")
	}
	if again, _ := kr.VerifyWithin(ctx, m.Secret, nil, ""); &placeholdersOf.Of(again).list[0] != &placeholdersOf.Of(k).list[0] {
		t.Error("placeholders rebuilt for a cached key")
	}
}
