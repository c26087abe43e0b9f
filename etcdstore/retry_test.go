package etcdstore

import (
	"context"
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func TestTransientErrors(t *testing.T) {
	for _, err := range []error{
		rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrStopped, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, status.Error(codes.Unavailable, "connection refused"),
	} {
		if !transient(err) {
			t.Errorf("%v is not retried", err)
		}
	}
	for _, err := range []error{
		context.DeadlineExceeded, context.Canceled, rpctypes.ErrPermissionDenied,
		rpctypes.ErrTooManyOps, rpctypes.ErrAuthFailed, keystore.ErrNotFound, errors.New("boom"),
	} {
		if transient(err) {
			t.Errorf("%v is retried", err)
		}
	}
}

func TestRetryStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	tries := 0
	_, err := retry(ctx, func() (int, error) {
		if tries++; tries == 3 {
			cancel()
		}
		return 0, rpctypes.ErrLeaderChanged
	})
	if !errors.Is(err, rpctypes.ErrLeaderChanged) || tries != 3 {
		t.Fatalf("retry = %v after %d tries", err, tries)
	}
}
