package keystore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestFaultReason(t *testing.T) {
	for err, want := range map[error]string{
		nil:                               "",
		ErrNotFound:                       "",
		fmt.Errorf("id x: %w", ErrExists): "",
		&RequestError{Msg: "bad"}:         "",
		context.Canceled:                  "",
		&os.PathError{Op: "write", Path: "keys.db", Err: syscall.ENOSPC}: "disk_full",
		fmt.Errorf("commit: %w", syscall.EDQUOT):                         "disk_full",
		fmt.Errorf("etcd: %w", context.DeadlineExceeded):                 "timeout",
		errors.New("etcd: connection refused"):                           "store",
	} {
		if got := FaultReason(err); got != want {
			t.Errorf("FaultReason(%v) = %q, want %q", err, got, want)
		}
	}
}
