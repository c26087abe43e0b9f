package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func bcryptHashCost(t *testing.T, password string, cost int) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// burst sends every body to the create endpoint at once and tallies the
// statuses, in the order the answers arrived.
func burst(t *testing.T, url string, bodies []string) (counts map[int]int, order []int, retryAfter map[int]bool) {
	t.Helper()
	bc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: len(bodies)}}
	defer bc.CloseIdleConnections()
	var mu sync.Mutex
	counts, retryAfter = map[int]int{}, map[int]bool{}
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(len(bodies))
	for _, body := range bodies {
		wg.Go(func() {
			ready.Done()
			<-start
			res, err := bc.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			mu.Lock()
			counts[res.StatusCode]++
			order = append(order, res.StatusCode)
			if res.Header.Get("Retry-After") != "" {
				retryAfter[res.StatusCode] = true
			}
			mu.Unlock()
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	return counts, order, retryAfter
}

// TestLockoutHoldsUnderConcurrency sends 150 wrong passwords at once for
// each of a configured user, a stored user (added with the CLI) and an
// unknown name, to the real binary: at most account_threshold of each may
// be checked (401), the rest are refused (429), and the right password
// sent next is refused too.
func TestLockoutHoldsUnderConcurrency(t *testing.T) {
	const threshold, guesses = 5, 150
	g := startHardened(t, "", fmt.Sprintf("lockout {\n\t\t\taccount_threshold %d\n\t\t\taddress_threshold 100000\n\t\t}\n\t\tmax_queued_password_checks 1000", threshold))
	mustCLI(t, "bobpw\n", "--address", g.admin, "user", "add", "bob")
	users := []string{"alice", "bob", "mallory-does-not-exist"}
	var bodies []string
	for i := range guesses {
		for _, u := range users {
			bodies = append(bodies, fmt.Sprintf(`{"auth": {"username": %q, "password": "guess-%d"}}`, u, i))
		}
	}
	// Tally per user: statuses come back unordered, so send each user's
	// burst on its own, all three at once.
	var wg sync.WaitGroup
	results := make([]map[int]int, len(users))
	for i := range users {
		wg.Go(func() {
			var mine []string
			for j := i; j < len(bodies); j += len(users) {
				mine = append(mine, bodies[j])
			}
			results[i], _, _ = burst(t, g.base+"/api/create_api_key", mine)
		})
	}
	wg.Wait()
	for i, u := range users {
		c := results[i]
		t.Logf("%s: %d wrong passwords at once: %d checked (401), %d refused (429), others %v", u, guesses, c[401], c[429], c)
		if c[401] > threshold || c[401] == 0 || c[401]+c[429] != guesses {
			t.Errorf("%s: %v; want at most %d answered 401 and the rest 429", u, c, threshold)
		}
	}
	for _, auth := range []string{`{"username": "alice", "password": "alicepw"}`, `{"username": "bob", "password": "bobpw"}`} {
		if r := post(t, g.base+"/api/create_api_key", `{"auth": `+auth+`}`); r.status != 429 || r.header.Get("Retry-After") == "" {
			t.Errorf("right password after the burst: %d %s, want 429 with Retry-After", r.status, r.body)
		}
	}
}

// TestAddressLockoutHoldsUnderConcurrency sprays one password over 200
// usernames (one real, the others unknown) at once from one address.
func TestAddressLockoutHoldsUnderConcurrency(t *testing.T) {
	const threshold, guesses = 20, 200
	// A hash of some cost, so that the guesses overlap.
	g := startHardenedHash(t, "", fmt.Sprintf("lockout {\n\t\t\taddress_threshold %d\n\t\t}\n\t\tmax_queued_password_checks 1000", threshold),
		bcryptHashCost(t, "alicepw", 10))
	var bodies []string
	for i := range guesses {
		user := "alice"
		if i > 0 {
			user = fmt.Sprint("user", i)
		}
		bodies = append(bodies, fmt.Sprintf(`{"auth": {"username": %q, "password": "Winter2026!"}}`, user))
	}
	c, _, _ := burst(t, g.base+"/api/create_api_key", bodies)
	t.Logf("%d sprayed sign-ins at once: %d checked (401), %d refused (429)", guesses, c[401], c[429])
	if c[401] > threshold || c[401] == 0 || c[401]+c[429] != guesses {
		t.Fatalf("%v; want at most %d answered 401 and the rest 429", c, threshold)
	}
	if r := post(t, g.base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`); r.status != 429 {
		t.Fatalf("right password from the locked address: %d %s, want 429", r.status, r.body)
	}
}

// TestPasswordQueueIsBounded holds one hashing slot with a slow hash and
// a queue of two: the other sign-ins of a burst are answered 503 with
// Retry-After before any check finishes, instead of waiting for a slot.
func TestPasswordQueueIsBounded(t *testing.T) {
	g := startHardened(t, "", "lockout off\n\t\tmax_concurrent_password_checks 1\n\t\tmax_queued_password_checks 2\n\t\tuser slow "+bcryptHashCost(t, "slowpw", 13))
	post(t, g.base+"/api/create_api_key", `{"auth": {"username": "slow", "password": "warm-up"}}`)
	const n = 30
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = fmt.Sprintf(`{"auth": {"username": "slow", "password": "guess-%d"}}`, i)
	}
	c, order, retry := burst(t, g.base+"/api/create_api_key", bodies)
	t.Logf("%d sign-ins at once, 1 slot, queue of 2: %v, in order %v", n, c, order)
	if c[503] < n-3 || !retry[503] {
		t.Fatalf("%v: want at least %d answered 503 with Retry-After", c, n-3)
	}
	// Refused at once: every 503 arrived before the first check ended.
	first401 := len(order)
	for i, s := range order {
		if s == 401 {
			first401 = i
			break
		}
	}
	if first401 < n-3 {
		t.Fatalf("only %d answers came before the first finished check (%v): the refusals waited", first401, order)
	}
}
