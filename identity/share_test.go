package identity

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func TestThrottleSharesTheThresholds(t *testing.T) {
	th := NewThrottle(LockoutPolicy{}, nil)
	for _, tc := range []struct {
		index, count        int
		account, addressLim int
	}{
		{0, 1, 10, 50},
		{0, 3, 4, 17},
		{2, 3, 3, 16},
		{10, 11, 0, 4}, // more gateways than the account threshold
		{3, 3, 10, 50}, // impossible shares are the whole
		{0, 0, 10, 50},
	} {
		th.SetShare(tc.index, tc.count)
		if a, b := th.Limits(); a != tc.account || b != tc.addressLim {
			t.Errorf("share %d of %d: parts %d and %d, want %d and %d", tc.index, tc.count, a, b, tc.account, tc.addressLim)
		}
	}
}

// A membership change keeps the counts: a gateway whose count already
// reaches its smaller new part locks at its next attempt without a check,
// and one whose part grows may check up to it.
func TestThrottleShareChangesKeepCounts(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	th := NewThrottle(LockoutPolicy{AccountThreshold: 10, AddressThreshold: 1000, Window: time.Hour, Lockout: time.Minute, MaxLockout: time.Hour}, clock.now)
	reserve := func(n int) {
		t.Helper()
		for i := range n {
			if _, wait := th.Reserve("alice", "192.0.2.1"); wait != 0 {
				t.Fatalf("attempt %d of %d refused (%v)", i+1, n, wait)
			}
		}
	}
	refused := func(want time.Duration) {
		t.Helper()
		if r, wait := th.Reserve("alice", "192.0.2.1"); r != nil || wait != want {
			t.Fatalf("attempt past the part: %v, want refused for %v", wait, want)
		}
	}
	reserve(6)        // alone: 6 of 10
	th.SetShare(1, 3) // two more gateways: a part of 3
	refused(time.Minute)
	clock.advance(time.Minute)
	reserve(3) // the third starts the next lockout, twice as long
	refused(2 * time.Minute)
	clock.advance(2 * time.Minute)
	reserve(2)
	th.SetShare(0, 1) // the others left: the whole 10, the 2 kept
	reserve(8)
	refused(4 * time.Minute)

	// Refunding the failure that started a lockout restores the count
	// before it, which a smaller part then refuses.
	th.SetShare(0, 3) // 4
	r := make([]*Reservation, 4)
	for i := range r {
		r[i], _ = th.Reserve("bob", "192.0.2.2")
	}
	if _, wait := th.Reserve("bob", "192.0.2.2"); wait == 0 {
		t.Fatal("a fifth attempt with a part of 4 was not refused")
	}
	r[3].Cancel()
	th.SetShare(1, 3) // 3: bob's 3 failures reach it
	if _, wait := th.Reserve("bob", "192.0.2.2"); wait != time.Minute {
		t.Fatalf("after the refund and a smaller part: refused for %v, want a lockout of 1m", wait)
	}
}

// A gateway whose part is 0 checks nothing: every first attempt locks at
// once, and counts nothing at the address.
func TestThrottleZeroShareLocksAtOnce(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	th := NewThrottle(LockoutPolicy{AccountThreshold: 3, AddressThreshold: 100, Window: time.Hour, Lockout: time.Minute, MaxLockout: time.Hour}, clock.now)
	th.SetShare(3, 4) // parts 0 and 25
	for _, step := range []struct{ after, want time.Duration }{
		{0, time.Minute},
		{30 * time.Second, 30 * time.Second}, // the same lockout
		{30 * time.Second, 2 * time.Minute},  // the next, escalated
	} {
		clock.advance(step.after)
		if r, wait := th.Reserve("alice", "192.0.2.1"); r != nil || wait != step.want {
			t.Fatalf("with a part of 0: %v, want refused for %v", wait, step.want)
		}
	}
	if f := th.addresses[AddressKey("192.0.2.1")]; f != nil && f.count != 0 {
		t.Fatalf("refused attempts counted %d failures at the address", f.count)
	}
	if th.Failed("bob", "192.0.2.3") == 0 {
		t.Fatal("a failure with a part of 0 did not lock")
	}
}

// TestSharedThresholdsHoldAcrossGateways: three gateways, each enforcing
// its part, get 200 wrong passwords each at once for a configured user
// and an unknown name: exactly account_threshold of each are checked in
// all, and the right password is refused on every gateway. Sprayed over
// usernames from one address, exactly address_threshold are checked.
func TestSharedThresholdsHoldAcrossGateways(t *testing.T) {
	alice, _ := bcrypt.GenerateFromPassword([]byte("alicepw"), bcrypt.MinCost)
	const gateways, perGateway = 3, 200
	gatewaysWith := func(p LockoutPolicy) []*Passwords {
		var vs []*Passwords
		for i := range gateways {
			th := NewThrottle(p, nil)
			th.SetShare(i, gateways)
			vs = append(vs, NewPasswords(map[string]string{"alice": string(alice)}, nil,
				PasswordOptions{Throttle: th, MaxConcurrentHashes: 2, MaxQueuedHashes: 10_000, HashWait: time.Minute}))
		}
		return vs
	}
	// attack sends perGateway attempts to each gateway at once and returns
	// how many each checked (wrong password) of each username.
	attack := func(vs []*Passwords, cred func(i int) (user, addr string)) []map[string]int {
		checked := make([]map[string]int, len(vs))
		for g := range checked {
			checked[g] = map[string]int{}
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range perGateway * len(vs) {
			g := i % len(vs)
			wg.Go(func() {
				user, addr := cred(i)
				_, err := vs[g].Authenticate(context.Background(), Credential{Kind: KindPassword, Username: user, Password: fmt.Sprint("guess", i)}, addr)
				var locked *LockedOutError
				switch {
				case errors.Is(err, ErrBadCredentials):
					mu.Lock()
					checked[g][user]++
					mu.Unlock()
				case errors.As(err, &locked):
				default:
					t.Errorf("%s on gateway %d: %v", user, g, err)
				}
			})
		}
		wg.Wait()
		return checked
	}
	rightRefusedEverywhere := func(vs []*Passwords, addr string) {
		t.Helper()
		for g, v := range vs {
			var locked *LockedOutError
			if _, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: "alice", Password: "alicepw"}, addr); !errors.As(err, &locked) {
				t.Errorf("alice's right password on gateway %d after the attack: %v, want a lockout", g, err)
			}
		}
	}

	t.Run("account", func(t *testing.T) {
		const threshold = 10
		vs := gatewaysWith(LockoutPolicy{AccountThreshold: threshold, AddressThreshold: 1 << 20})
		users := []string{"alice", "mallory"}
		checked := attack(vs, func(i int) (string, string) {
			return users[(i/gateways)%len(users)], fmt.Sprintf("198.51.100.%d", i%250)
		})
		for _, user := range users {
			total := 0
			for g := range vs {
				if want := int(keystore.PartOf(threshold, g, gateways)); checked[g][user] != want {
					t.Errorf("%s: gateway %d checked %d, want its part %d", user, g, checked[g][user], want)
				}
				total += checked[g][user]
			}
			if total != threshold {
				t.Errorf("%s: %d wrong passwords checked by %d gateways, want exactly %d", user, total, gateways, threshold)
			}
		}
		rightRefusedEverywhere(vs, "192.0.2.1")
	})

	t.Run("address", func(t *testing.T) {
		const threshold = 20
		vs := gatewaysWith(LockoutPolicy{AccountThreshold: 1 << 20, AddressThreshold: threshold})
		checked := attack(vs, func(i int) (string, string) { return fmt.Sprint("user", i), "203.0.113.7" })
		total := 0
		for g := range vs {
			n := 0
			for _, c := range checked[g] {
				n += c
			}
			if want := int(keystore.PartOf(threshold, g, gateways)); n != want {
				t.Errorf("gateway %d checked %d sprayed passwords, want its part %d", g, n, want)
			}
			total += n
		}
		if total != threshold {
			t.Errorf("%d sprayed passwords checked by %d gateways, want exactly %d", total, gateways, threshold)
		}
		rightRefusedEverywhere(vs, "203.0.113.7")
	})
}
