package etcdstore

import (
	"context"
	"errors"
	"testing"
	"time"

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

func TestTryAbandonsAStuckCallInTime(t *testing.T) {
	stuck := func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	start := time.Now()
	_, err := try(context.Background(), 300*time.Millisecond, stuck)
	if !transient(err) {
		t.Fatalf("a try that ran out of its share: %v, want a transient error", err)
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Fatalf("the try took %v, more than its share of 300ms", took)
	}
	// When the whole request is out of time, nothing is worth retrying.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := try(ctx, time.Hour, stuck); transient(err) {
		t.Fatalf("a try whose request ran out of time: %v, want a final error", err)
	}
}
