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
	}
	return false
}

func TestWritesWhoseAnswerIsLostAreNotReportedAsConflicts(t *testing.T) {
	c := etcdtest.Start(t, 1)
	loser := &answerLoser{}
	s, err := Open(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(loser.intercept)},
	}, Options{Prefix: "/lost/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	newKey := func() keystore.Key {
		secret, _ := keystore.NewKey(keystore.DefaultPrefix)
		id, _ := keystore.NewID(time.Now())
		return keystore.Key{ID: id, Hash: keystore.HashKey(secret), Owner: "alice", Created: time.Now().Truncate(time.Microsecond)}
	}

	loser.armed.Store(true)
	k := newKey()
	if err := s.CreateKey(ctx, k, 3); err != nil {
		t.Fatalf("CreateKey whose answer was lost: %v", err)
	}
	if loser.armed.Load() {
		t.Fatal("no answer was lost: the test did not test anything")
	}
	if keys, _ := s.KeysByOwner(ctx, "alice"); len(keys) != 1 {
		t.Fatalf("%d keys after one create, want 1", len(keys))
	}

	loser.armed.Store(true)
	next := newKey()
	old, err := s.RotateKey(ctx, k.ID, next, time.Time{})
	if err != nil || old.ID != k.ID {
		t.Fatalf("RotateKey whose answer was lost: %+v, %v", old, err)
	}
	if _, err := s.KeyByID(ctx, k.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("rotated key: %v", err)
	}

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
	b.Owner = "bob"
	if err := s.CreateKey(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	loser.armed.Store(true)
	removed, err := s.DeleteUser(ctx, "bob")
	if err != nil || len(removed) != 1 || removed[0].ID != b.ID {
		t.Fatalf("DeleteUser whose answer was lost: %+v, %v", removed, err)
	}
}
