// Package testutil holds helpers shared by the project's tests.
package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails the test with what if it
// does not within limit. It polls every 10 ms at first, backing off to
// every 200 ms, so that quick conditions cost little and slow ones little
// CPU.
func Eventually(tb testing.TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	wait := 10 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(wait)
		wait = min(wait*2, 200*time.Millisecond)
	}
}
