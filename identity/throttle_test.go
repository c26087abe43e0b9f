package identity

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestThrottleEscalatesAndResets(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	th := NewThrottle(LockoutPolicy{AccountThreshold: 3, AddressThreshold: 100, Window: time.Hour, Lockout: time.Minute, MaxLockout: 4 * time.Minute}, clock.now)

	for i := range 2 {
		if lock := th.Failed("alice", fmt.Sprintf("10.0.0.%d", i)); lock != 0 {
			t.Fatalf("locked after %d failures", i+1)
		}
	}
	if lock := th.Failed("alice", "10.0.0.9"); lock != time.Minute {
		t.Fatalf("third failure locked for %v, want 1m", lock)
	}
	if wait := th.Locked("alice", "192.0.2.1"); wait != time.Minute {
		t.Fatalf("Locked = %v from another address, want 1m (per account)", wait)
	}
	if wait := th.Locked("bob", "10.0.0.9"); wait != 0 {
		t.Fatalf("another account locked: %v", wait)
	}
	// Escalation: 1m, 2m, 4m, then capped at 4m.
	for _, want := range []time.Duration{2 * time.Minute, 4 * time.Minute, 4 * time.Minute} {
		clock.advance(th.Locked("alice", ""))
		th.Failed("alice", "x")
		th.Failed("alice", "x")
		if lock := th.Failed("alice", "x"); lock != want {
			t.Fatalf("lockout %v, want %v", lock, want)
		}
	}
	// A success clears the account.
	clock.advance(th.Locked("alice", ""))
	th.Succeeded("alice")
	if lock := th.Failed("alice", "y"); lock != 0 {
		t.Fatal("count not reset by success")
	}
	// Failures older than the window are forgotten.
	th.Failed("carol", "z")
	th.Failed("carol", "z")
	clock.advance(2 * time.Hour)
	if lock := th.Failed("carol", "z"); lock != 0 {
		t.Fatal("failures outside the window counted")
	}
}

func TestThrottlePerAddress(t *testing.T) {
	th := NewThrottle(LockoutPolicy{AccountThreshold: 100, AddressThreshold: 5}, nil)
	for i := range 4 {
		th.Failed(fmt.Sprintf("user%d", i), "203.0.113.7")
	}
	if lock := th.Failed("user5", "203.0.113.7"); lock == 0 {
		t.Fatal("address not locked after spraying 5 usernames")
	}
	if th.Locked("someone-else", "203.0.113.7") == 0 || th.Locked("someone-else", "198.51.100.1") != 0 {
		t.Fatal("address lockout applies to the wrong callers")
	}
	th.Succeeded("user0")
	if th.Locked("user0", "203.0.113.7") == 0 {
		t.Fatal("a success on one account unlocked the address")
	}
}

func TestThrottleBounded(t *testing.T) {
	th := NewThrottle(LockoutPolicy{MaxEntries: 100}, nil)
	for i := range 1000 {
		th.Failed(fmt.Sprintf("user%d", i), fmt.Sprintf("addr%d", i))
	}
	if len(th.accounts) > 100 || len(th.addresses) > 100 {
		t.Fatalf("throttle holds %d accounts, %d addresses; bound is 100", len(th.accounts), len(th.addresses))
	}
}
