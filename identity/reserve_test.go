package identity

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// TestReservationsBoundConcurrentGuesses sends many wrong passwords at
// once, for a configured user, a stored user and an unknown name: at most
// account_threshold of each are checked, and then the right password is
// refused too.
func TestReservationsBoundConcurrentGuesses(t *testing.T) {
	alice, _ := bcrypt.GenerateFromPassword([]byte("alicepw"), bcrypt.MinCost)
	bob, _ := bcrypt.GenerateFromPassword([]byte("bobpw"), bcrypt.MinCost)
	lookup := func(_ context.Context, name string) (string, bool, error) {
		if name == "bob" {
			return string(bob), true, nil
		}
		return "", false, nil
	}
	const threshold, guesses = 5, 100
	th := NewThrottle(LockoutPolicy{AccountThreshold: threshold, AddressThreshold: 1 << 20}, nil)
	v := NewPasswords(map[string]string{"alice": string(alice)}, lookup,
		PasswordOptions{Throttle: th, MaxConcurrentHashes: 2, MaxQueuedHashes: 1000, HashWait: time.Minute})
	ctx := context.Background()
	checked := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range guesses {
		for _, user := range []string{"alice", "bob", "mallory"} {
			wg.Go(func() {
				_, err := v.Authenticate(ctx, Credential{Kind: KindPassword, Username: user, Password: fmt.Sprint("guess", i)}, fmt.Sprintf("198.51.100.%d", i%200))
				var locked *LockedOutError
				switch {
				case errors.Is(err, ErrBadCredentials):
					mu.Lock()
					checked[user]++
					mu.Unlock()
				case errors.As(err, &locked):
				default:
					t.Errorf("%s: %v", user, err)
				}
			})
		}
	}
	wg.Wait()
	for _, user := range []string{"alice", "bob", "mallory"} {
		if checked[user] != threshold {
			t.Errorf("%s: %d of %d concurrent wrong passwords checked, want exactly %d", user, checked[user], guesses, threshold)
		}
	}
	for user, pw := range map[string]string{"alice": "alicepw", "bob": "bobpw"} {
		var locked *LockedOutError
		if _, err := v.Authenticate(ctx, Credential{Kind: KindPassword, Username: user, Password: pw}, "192.0.2.1"); !errors.As(err, &locked) {
			t.Errorf("%s's right password after the burst: %v, want a lockout", user, err)
		}
	}
}

// TestReservationsBoundAddressSpray sprays one wrong password over many
// usernames from one address, at once.
func TestReservationsBoundAddressSpray(t *testing.T) {
	const threshold, guesses = 7, 150
	th := NewThrottle(LockoutPolicy{AccountThreshold: 100, AddressThreshold: threshold}, nil)
	v := NewPasswords(nil, nil, PasswordOptions{Throttle: th, MaxConcurrentHashes: 2, MaxQueuedHashes: 1000, HashWait: time.Minute})
	var mu sync.Mutex
	checked := 0
	var wg sync.WaitGroup
	for i := range guesses {
		wg.Go(func() {
			// One /64: the addresses differ only in their last 64 bits.
			addr := fmt.Sprintf("2001:db8:1:2::%x", i+1)
			_, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: fmt.Sprint("user", i), Password: "Winter2026"}, addr)
			if errors.Is(err, ErrBadCredentials) {
				mu.Lock()
				checked++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if checked != threshold {
		t.Fatalf("%d of %d sprayed passwords checked, want exactly %d", checked, guesses, threshold)
	}
}

func TestAddressKeyGroupsIPv6By64(t *testing.T) {
	for _, c := range []struct{ name, a, b string }{
		{"same 64-bit prefix", "2001:db8::1", "2001:db8::ffff:1"},
		{"same prefix spelt out", "2001:db8:0:0:1::1", "2001:db8::9"},
		{"IPv4-mapped and IPv4", "::ffff:192.0.2.1", "192.0.2.1"},
		{"link-local with a zone", "fe80::1%eth0", "fe80::2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if AddressKey(c.a) != AddressKey(c.b) {
				t.Errorf("%s and %s counted apart: %s, %s", c.a, c.b, AddressKey(c.a), AddressKey(c.b))
			}
		})
	}
	for _, c := range []struct{ name, a, b string }{
		{"next 64-bit prefix", "2001:db8::1", "2001:db8:0:1::1"},
		{"two IPv4 addresses", "192.0.2.1", "192.0.2.2"},
		{"two non-addresses", "not-an-ip", "not-an-ip2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if AddressKey(c.a) == AddressKey(c.b) {
				t.Errorf("%s and %s counted together as %s", c.a, c.b, AddressKey(c.a))
			}
		})
	}
	th := NewThrottle(LockoutPolicy{AccountThreshold: 100, AddressThreshold: 2}, nil)
	th.Failed("a", "2001:db8::1")
	if th.Failed("b", "2001:db8::2") == 0 || th.Locked("c", "2001:db8::3") == 0 {
		t.Fatal("rotating through one /64 escaped the address lockout")
	}
	if th.Locked("c", "2001:db8:0:1::3") != 0 {
		t.Fatal("the next /64 is locked too")
	}
}

func TestReservationRefunds(t *testing.T) {
	th := NewThrottle(LockoutPolicy{AccountThreshold: 3, AddressThreshold: 3}, nil)
	// Cancelled attempts were never checked: they cost nothing.
	for range 10 {
		r, wait := th.Reserve("alice", "192.0.2.1")
		if wait != 0 {
			t.Fatalf("locked by attempts that were all cancelled (%v)", wait)
		}
		r.Cancel()
	}
	// The attempt that reaches the threshold locks at once; cancelling it
	// undoes that lockout.
	r1, _ := th.Reserve("alice", "192.0.2.1")
	r2, _ := th.Reserve("alice", "192.0.2.1")
	r3, _ := th.Reserve("alice", "192.0.2.1")
	if _, wait := th.Reserve("alice", "192.0.2.9"); wait == 0 {
		t.Fatal("a fourth attempt in flight was not refused")
	}
	r3.Cancel()
	r4, wait := th.Reserve("alice", "192.0.2.1")
	if wait != 0 {
		t.Fatal("the lockout of a cancelled attempt stayed")
	}
	// A success forgets the account's failures but refunds only its own
	// at the address.
	r4.Succeeded()
	r1.Succeeded() // each reservation ends once: repeats do nothing
	r1.Cancel()
	r2.Cancel()
	if th.Locked("alice", "192.0.2.1") != 0 {
		t.Fatal("locked after a success")
	}
	for _, user := range []string{"bob", "carol", "dave"} {
		if _, wait := th.Reserve(user, "192.0.2.1"); wait != 0 {
			t.Fatalf("%s refused before the address reached its threshold", user)
		}
	}
	if _, wait := th.Reserve("erin", "192.0.2.1"); wait == 0 {
		t.Fatal("address not locked after three failures on three accounts")
	}
}

// TestQueueForHashingIsBounded fills the hashing slot and the queue: the
// next check is refused at once, not after HashWait.
func TestQueueForHashingIsBounded(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	v := NewPasswords(map[string]string{"alice": string(h)}, nil,
		PasswordOptions{MaxConcurrentHashes: 1, MaxQueuedHashes: 1, HashWait: time.Hour, SuccessCacheSize: -1})
	v.slots <- struct{}{} // the only slot is taken
	waiterCtx, stopWaiter := context.WithCancel(context.Background())
	waiting := make(chan error)
	go func() {
		_, err := v.Authenticate(waiterCtx, Credential{Kind: KindPassword, Username: "alice", Password: "x"}, "a")
		waiting <- err
	}()
	testutil.Eventually(t, 10*time.Second, "the first check queued", func() bool { return v.queued.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := v.Authenticate(ctx, Credential{Kind: KindPassword, Username: "alice", Password: "pw"}, "b"); !errors.Is(err, ErrBusy) {
		t.Fatalf("with the queue full: %v, want ErrBusy at once", err)
	}
	stopWaiter()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("queued check: %v", err)
	}
}

// TestUnknownUsersCostTheMostExpensiveKind configures an argon2id user
// and stores a bcrypt user of a higher cost (as an operator may, through
// password_hash): unknown names must be checked against that bcrypt
// cost, not the configured user's.
func TestUnknownUsersCostTheMostExpensiveKind(t *testing.T) {
	stored, _ := bcrypt.GenerateFromPassword([]byte("bobpw"), 11)
	lookup := func(_ context.Context, name string) (string, bool, error) {
		if name == "bob" {
			return string(stored), true, nil
		}
		return "", false, nil
	}
	listed := func(context.Context) ([]string, error) { return []string{string(stored)}, nil }
	for _, c := range []struct {
		name string
		list func(context.Context) ([]string, error)
	}{{"listed at start", listed}, {"met at sign-in", nil}} {
		t.Run(c.name, func(t *testing.T) {
			v := NewPasswords(map[string]string{"example_username": exampleArgon2id}, lookup,
				PasswordOptions{StoredHashes: c.list})
			if c.list == nil {
				if _, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: "bob", Password: "nope"}, "a"); !errors.Is(err, ErrBadCredentials) {
					t.Fatal(err)
				}
			}
			if got := hashKind(v.fake()); got != "bcrypt cost=11" {
				t.Fatalf("unknown users are checked against %q, want the stored bcrypt cost=11", got)
			}
			// The configured argon2id has the CLI's parameters: one kind.
			if kinds := len(v.costs.kinds); kinds != 2 {
				t.Fatalf("%d kinds measured, want 2 (argon2id as configured and as the CLI writes, stored bcrypt)", kinds)
			}
		})
	}
}

// A configured user whose password was checked right recently signs in
// from the success cache: neither other people's guesses nor the user's
// own concurrent sign-ins lock it out, and guesses are still bounded.
func TestKnownPasswordIsNotLockedOut(t *testing.T) {
	alice, _ := bcrypt.GenerateFromPassword([]byte("alicepw"), bcrypt.MinCost)
	const threshold = 3
	th := NewThrottle(LockoutPolicy{AccountThreshold: threshold, AddressThreshold: 1 << 20}, nil)
	v := NewPasswords(map[string]string{"alice": string(alice)}, nil,
		PasswordOptions{Throttle: th, MaxConcurrentHashes: 2, MaxQueuedHashes: 1000, HashWait: time.Minute})
	ctx := context.Background()
	right := Credential{Kind: KindPassword, Username: "alice", Password: "alicepw"}
	if _, err := v.Authenticate(ctx, right, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	var checked, refused, signedIn atomic.Int64
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() { // guesses from elsewhere
			_, err := v.Authenticate(ctx, Credential{Kind: KindPassword, Username: "alice", Password: fmt.Sprint("guess", i)}, "198.51.100.7")
			var locked *LockedOutError
			switch {
			case errors.Is(err, ErrBadCredentials):
				checked.Add(1)
			case errors.As(err, &locked):
				refused.Add(1)
			default:
				t.Error(err)
			}
		})
		wg.Go(func() { // the client, 64 sign-ins at once
			if _, err := v.Authenticate(ctx, right, "192.0.2.1"); err != nil {
				t.Errorf("the right, known password: %v", err)
				return
			}
			signedIn.Add(1)
		})
	}
	wg.Wait()
	if checked.Load() != threshold || signedIn.Load() != 64 {
		t.Fatalf("%d guesses checked (want %d), %d of 64 sign-ins with the known password", checked.Load(), threshold, signedIn.Load())
	}
}

// TestIdenticalSignInsAtOnceAreOneAttempt sends one client's burst of the
// same sign-in to a verifier that has checked nothing yet: a right
// password is checked once and every sign-in of the burst succeeds, where
// each counted as a failure until checked would lock the user out; a
// wrong one counts as one failure, so the lockout still comes after the
// threshold of different guesses.
func TestIdenticalSignInsAtOnceAreOneAttempt(t *testing.T) {
	bcryptHash, _ := bcrypt.GenerateFromPassword([]byte("alicepw"), 8) // slow enough that the burst overlaps
	argonHash, err := HashPassword("alicepw")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind       string
		configured map[string]string
		stored     string
	}{
		{"configured user, bcrypt", map[string]string{"alice": string(bcryptHash)}, ""},
		{"configured user, argon2id", map[string]string{"alice": argonHash}, ""},
		{"stored user, bcrypt", nil, string(bcryptHash)},
		{"stored user, argon2id", nil, argonHash},
	} {
		t.Run(c.kind, func(t *testing.T) {
			testIdenticalSignIns(t, c.configured, c.stored)
		})
	}
}

func testIdenticalSignIns(t *testing.T, configured map[string]string, stored string) {
	const threshold, burst = 3, 64
	lookup := func(_ context.Context, name string) (string, bool, error) {
		return stored, name == "alice" && stored != "", nil
	}
	newVerifier := func() *Passwords {
		th := NewThrottle(LockoutPolicy{AccountThreshold: threshold, AddressThreshold: 1 << 20}, nil)
		return NewPasswords(configured, lookup,
			PasswordOptions{Throttle: th, MaxConcurrentHashes: 2, MaxQueuedHashes: 1000, HashWait: time.Minute})
	}
	signIns := func(v *Passwords, password string) map[string]int {
		outcomes := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range burst {
			wg.Go(func() {
				_, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: "alice", Password: password}, "198.51.100.7")
				var locked *LockedOutError
				outcome := "ok"
				switch {
				case err == nil:
				case errors.Is(err, ErrBadCredentials):
					outcome = "bad credentials"
				case errors.As(err, &locked):
					outcome = "locked out"
				default:
					outcome = err.Error()
				}
				mu.Lock()
				outcomes[outcome]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return outcomes
	}

	if got := signIns(newVerifier(), "alicepw"); got["ok"] != burst {
		t.Errorf("%d right sign-ins at once: %v, want all ok", burst, got)
	}

	v := newVerifier()
	if got := signIns(v, "guess"); got["bad credentials"] != burst {
		t.Errorf("%d identical wrong sign-ins at once: %v, want all refused as bad credentials", burst, got)
	}
	for i := range threshold - 1 { // the last of these reaches the threshold, and is still checked
		if _, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: "alice", Password: fmt.Sprint("other", i)}, "198.51.100.7"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess %d after the burst: %v, want it checked", i+2, err)
		}
	}
	var locked *LockedOutError
	if _, err := v.Authenticate(context.Background(), Credential{Kind: KindPassword, Username: "alice", Password: "alicepw"}, "198.51.100.7"); !errors.As(err, &locked) {
		t.Fatalf("right password after the burst and %d more guesses: %v, want locked out", threshold-1, err)
	}
}

// Sign-ins in flight and known passwords are keyed by digests of their
// parts: parts that run together differently make different keys.
func TestDigestOfKeepsPartsApart(t *testing.T) {
	for _, c := range [][2][]string{
		{{"alice", "x\x00y"}, {"alice\x00x", "y"}},
		{{"ab", "c"}, {"a", "bc"}},
		{{"", "ab"}, {"ab", ""}},
		{{"a", "b", ""}, {"a", "b"}},
	} {
		if digestOf(c[0]...) == digestOf(c[1]...) {
			t.Errorf("digestOf(%q) == digestOf(%q)", c[0], c[1])
		}
	}
}
