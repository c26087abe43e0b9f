package etcdstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// TestFullQuota fills a member past its backend quota, as a cluster whose
// history is never compacted ends up, and checks what docs/cluster.md says
// a gateway does then: minting, disabling and last-used writes fail with
// etcd's "database space exceeded" (a store fault, which the API answers
// 503), while checking and deleting keys go on working, since reads and
// deletions add nothing. Then it frees space the way the operator does
// (delete, compact, defragment, disarm the alarm) and mints again.
func TestFullQuota(t *testing.T) {
	c := etcdtest.StartWith(t, 1, etcdtest.Options{QuotaBackendBytes: 4 << 20})
	s := openStore(t, c, Options{})
	kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour})
	t.Cleanup(func() { _ = kr.Close() })
	ctx := context.Background()
	alice := keystore.Actor{Owner: keystore.Service("alice"), Operator: true}
	kept, err := kr.Mint(ctx, alice, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := kr.Mint(ctx, alice, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}

	cli := s.Client()
	filler := strings.Repeat("x", 256<<10)
	full := false
	for i := 0; i < 64 && !full; i++ {
		_, err := cli.Put(ctx, "/filler/"+string(rune('a'+i%26))+strings.Repeat("!", i/26), filler)
		switch {
		case errors.Is(err, rpctypes.ErrNoSpace):
			full = true
		case err != nil:
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("16 MiB written to a member with a 4 MiB quota, and no NOSPACE alarm")
	}
	alarms, err := cli.AlarmList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(alarms.Alarms) != 1 || alarms.Alarms[0].Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarms %v, want one NOSPACE", alarms.Alarms)
	}

	_, err = kr.Mint(ctx, alice, keystore.KeyRequest{})
	if !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("minting on a full cluster: %v, want etcd's %v", err, rpctypes.ErrNoSpace)
	}
	if err := s.TouchKeys(ctx, map[string]time.Time{kept.Key.ID: time.Now()}); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("writing a last-used time on a full cluster: %v, want etcd's %v", err, rpctypes.ErrNoSpace)
	}
	if _, _, err := kr.ChangeDisabled(ctx, kept.Key.ID, true); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("disabling a key on a full cluster: %v, want etcd's %v", err, rpctypes.ErrNoSpace)
	}
	if _, err := kr.VerifyWithin(ctx, kept.Secret, nil, ""); err != nil {
		t.Fatalf("checking a key on a full cluster: %v", err)
	}
	if _, err := s.DeleteKey(ctx, revoked.Key.ID); err != nil {
		t.Fatalf("revoking a key on a full cluster: %v", err)
	}
	if _, err := s.KeyByHash(ctx, revoked.Key.Hash, ""); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("the key revoked on a full cluster: %v, want ErrNotFound", err)
	}

	// What the operator does: free space, compact, defragment every
	// member, disarm.
	del, err := cli.Delete(ctx, "/filler/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	for _, ep := range c.Endpoints() {
		if _, err := cli.Defragment(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: alarms.Alarms[0].MemberID, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Mint(ctx, alice, keystore.KeyRequest{}); err != nil {
		t.Fatalf("minting once space was freed and the alarm disarmed: %v", err)
	}
}
