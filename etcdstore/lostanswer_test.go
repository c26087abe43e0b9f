package etcdstore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// answerLoser lets a write transaction reach etcd and be applied, then
// replaces its answer with the error a client sees when the leader changes
// at that moment: the write happened, but the caller cannot know.
type answerLoser struct{ armed atomic.Bool }

func (l *answerLoser) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if txn, ok := req.(*pb.TxnRequest); ok && err == nil && writes(txn) && l.armed.CompareAndSwap(true, false) {
		return status.Error(codes.Unavailable, "etcdserver: leader changed")
	}
	return err
}

func writes(txn *pb.TxnRequest) bool {
	for _, op := range txn.Success {
		if op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil {
			return true
		}
		if nested := op.GetRequestTxn(); nested != nil && writes(nested) { // a group commit's keys
			return true
		}
	}
	return false
}

// openWithAnswerLoser opens a store on a fresh one-member cluster whose
// client loses the answer of a write whenever the loser is armed.
func openWithAnswerLoser(t *testing.T, prefix string) (*Store, *answerLoser) {
	t.Helper()
	c := etcdtest.Start(t, 1)
	loser := &answerLoser{}
	s, err := Open(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(loser.intercept)},
	}, Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, loser
}

func TestWritesWhoseAnswerIsLostAreNotReportedAsConflicts(t *testing.T) {
	s, loser := openWithAnswerLoser(t, "/lost/")
	ctx := context.Background()
	newKey := func() keystore.Key {
		secret, id, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
		return keystore.Key{ID: id, Hash: keystore.HashKey(secret), Owner: keystore.PasswordUser("alice"), Created: time.Now().Truncate(time.Microsecond)}
	}

	loser.armed.Store(true)
	k := newKey()
	if err := s.CreateKey(ctx, k, keystore.CreateOptions{MaxPerOwner: 3}); err != nil {
		t.Fatalf("CreateKey whose answer was lost: %v", err)
	}
	if loser.armed.Load() {
		t.Fatal("no answer was lost: the test did not test anything")
	}
	if keys, _ := s.KeysByOwner(ctx, keystore.PasswordUser("alice")); len(keys) != 1 {
		t.Fatalf("%d keys after one create, want 1", len(keys))
	}

	loser.armed.Store(true)
	next := newKey()
	old, err := s.RotateKey(ctx, k.ID, next, time.Time{}, 0)
	if err != nil || old.ID != k.ID {
		t.Fatalf("RotateKey whose answer was lost: %+v, %v", old, err)
	}
	if _, err := s.KeyByID(ctx, k.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("rotated key: %v", err)
	}

	// With grace the old key stays, marked rotated: the retry must see
	// its own work there, not a key rotated by someone else.
	loser.armed.Store(true)
	graced := newKey()
	old, err = s.RotateKey(ctx, next.ID, graced, time.Now().Add(time.Hour), 3)
	if err != nil || old.ID != next.ID {
		t.Fatalf("RotateKey with grace whose answer was lost: %+v, %v", old, err)
	}
	if got, _ := s.KeyByID(ctx, next.ID); !got.Rotated {
		t.Fatalf("key rotated with grace: %+v", got)
	}
	next = graced

	loser.armed.Store(true)
	if got, err := s.DeleteKey(ctx, next.ID); err != nil || got.ID != next.ID {
		t.Fatalf("DeleteKey whose answer was lost: %+v, %v", got, err)
	}

	loser.armed.Store(true)
	if err := s.CreateUser(ctx, keystore.User{Name: "bob", PasswordHash: "h", Created: time.Now()}); err != nil {
		t.Fatalf("CreateUser whose answer was lost: %v", err)
	}
	if err := s.CreateUser(ctx, keystore.User{Name: "bob", PasswordHash: "h2"}); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("a second CreateUser: %v, want ErrExists", err)
	}

	b := newKey()
	b.Owner = keystore.PasswordUser("bob")
	if err := s.CreateKey(ctx, b, keystore.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	loser.armed.Store(true)
	removed, err := s.DeleteUser(ctx, "bob")
	if err != nil || len(removed) != 1 || removed[0].ID != b.ID {
		t.Fatalf("DeleteUser whose answer was lost: %+v, %v", removed, err)
	}
}

func TestDeleteKeysOfWhoseAnswerIsLostCountsEveryKey(t *testing.T) {
	s, loser := openWithAnswerLoser(t, "/lost-owner/")
	ctx := context.Background()
	svc := keystore.Service("backup-job")
	const n = 2*userKeysPerTxn + 5 // three transactions
	for range n {
		secret, id, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
		k := keystore.Key{ID: id, Hash: keystore.HashKey(secret), Owner: svc, Created: time.Now().Truncate(time.Microsecond)}
		if err := s.CreateKey(ctx, k, keystore.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	loser.armed.Store(true)
	removed, err := s.DeleteKeysOf(ctx, svc)
	if err != nil || len(removed) != n {
		t.Fatalf("DeleteKeysOf whose first answer was lost: %d keys, %v; want %d", len(removed), err, n)
	}
	if loser.armed.Load() {
		t.Fatal("no answer was lost: the test did not test anything")
	}
	if keys, _ := s.KeysByOwner(ctx, svc); len(keys) != 0 {
		t.Fatalf("%d keys left", len(keys))
	}
}
