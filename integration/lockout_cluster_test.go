package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
)

// startLockoutGateway runs the real binary over the etcd store at prefix,
// behind a load balancer on loopback (trusted_proxies: the client is the
// X-Forwarded-For address), with users alice, bob and carol and the
// lockout block given; it returns the gateway's base URL.
func startLockoutGateway(t *testing.T, c *etcdtest.Cluster, prefix, lockout string) (*runningCaddy, string) {
	t.Helper()
	dir := t.TempDir()
	ports := holdPorts(t, 2)
	cfg := fmt.Sprintf(`{
	%s
	servers {
		trusted_proxies static 127.0.0.1/32
	}
	apikeys {
		store etcd %s {
			prefix %s
		}
		user alice %s
		user bob %s
		user carol %s
		lockout {
			%s
		}
		max_queued_password_checks 1000
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
}
`, adminOption(ports[1], 4), strings.Join(c.Endpoints(), " "), prefix, bcryptHash(t, "alicepw"), bcryptHash(t, "bobpw"), bcryptHash(t, "carolpw"), lockout, ports[0].Addr)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return startBinary(t, path, dir, ports), "http://" + ports[0].Addr
}

// signIn is one password sign-in at the create endpoint, from a client
// address given to the gateways as X-Forwarded-For.
type signIn struct{ username, password, from string }

func (s signIn) send(c *http.Client, base string) (*http.Response, error) {
	body := fmt.Sprintf(`{"auth": {"username": %q, "password": %q}}`, s.username, s.password)
	req, err := http.NewRequest(http.MethodPost, base+"/api/create_api_key", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", s.from)
	return c.Do(req)
}

// spreadBurst sends every sign-in at once, the i-th to bases[i%len(bases)]
// as a round-robin load balancer would, and tallies the statuses per
// gateway.
func spreadBurst(t *testing.T, bases []string, signIns []signIn) []map[int]int {
	t.Helper()
	bc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: len(signIns)}}
	defer bc.CloseIdleConnections()
	counts := make([]map[int]int, len(bases))
	for g := range counts {
		counts[g] = map[int]int{}
	}
	var mu sync.Mutex
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(len(signIns))
	for i, s := range signIns {
		g := i % len(bases)
		wg.Go(func() {
			ready.Done()
			<-start
			res, err := s.send(bc, bases[g])
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			mu.Lock()
			counts[g][res.StatusCode]++
			mu.Unlock()
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	return counts
}

// TestLockoutHoldsAcrossThreeGateways runs three gateways over etcd
// behind a round-robin load balancer. 200 wrong passwords for one user at
// once, each from its own address and spread over the gateways, get at
// most account_threshold checked (401) in all, not that many per gateway;
// the right password is then refused (429) by every gateway. A spray of
// one password over 200 usernames from one address gets at most
// address_threshold checked, and that address is then refused everywhere.
func TestLockoutHoldsAcrossThreeGateways(t *testing.T) {
	const accountThreshold, addressThreshold, guesses = 10, 20, 200
	c := etcdtest.Start(t, 1)
	lockout := fmt.Sprintf("account_threshold %d\n\t\t\taddress_threshold %d", accountThreshold, addressThreshold)
	var gws []*runningCaddy
	var bases []string
	for range 3 {
		g, base := startLockoutGateway(t, c, "/lockout/", lockout)
		gws, bases = append(gws, g), append(bases, base)
	}
	// Every gateway counts the three of them before the attack. Without
	// that (a build that does not divide the lockout joins no
	// membership), the attack still runs, to show what it gets.
	for i, g := range gws {
		for end := time.Now().Add(10 * time.Second); !strings.Contains(g.Output(), `"msg":"gateways sharing the store","count":3`); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Errorf("gateway %d did not count three gateways sharing the store within 10s", i)
				break
			}
		}
	}
	// carol signs in on each, as someone would before an attack: the
	// gateway measures the hashes in use at its first password check,
	// which on a busy machine could hold the attack's checks past their
	// wait for a hashing slot (503), so that fewer would be checked.
	for g, base := range bases {
		res, err := signIn{"carol", "carolpw", "192.0.2.3"}.send(client, base)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("carol's sign-in on gateway %d: %d", g, res.StatusCode)
		}
	}
	tally := func(what string, counts []map[int]int) (checked, refused int) {
		t.Helper()
		for g, cnt := range counts {
			t.Logf("%s: gateway %d: %d checked (401), %d refused (429), all %v", what, g, cnt[401], cnt[429], cnt)
			checked += cnt[401]
			refused += cnt[429]
		}
		t.Logf("%s: %d of %d checked (401), %d refused (429)", what, checked, guesses, refused)
		return checked, refused
	}
	refusedEverywhere := func(s signIn) {
		t.Helper()
		for g, base := range bases {
			res, err := s.send(client, base)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
				t.Errorf("%s's right password from %s on gateway %d after the attack: %d, want 429 with Retry-After", s.username, s.from, g, res.StatusCode)
			}
		}
	}

	t.Run("one account from many addresses", func(t *testing.T) {
		var attack []signIn
		for i := range guesses {
			attack = append(attack, signIn{"alice", fmt.Sprint("guess-", i), fmt.Sprintf("198.51.100.%d", i+1)})
		}
		checked, refused := tally("200 wrong passwords for alice", spreadBurst(t, bases, attack))
		if checked > accountThreshold || checked == 0 || checked+refused != guesses {
			t.Errorf("%d checked and %d refused of %d wrong passwords over 3 gateways; want at most account_threshold %d checked in all and the rest refused",
				checked, refused, guesses, accountThreshold)
		}
		refusedEverywhere(signIn{"alice", "alicepw", "192.0.2.1"})
	})

	t.Run("one address spraying usernames", func(t *testing.T) {
		var attack []signIn
		for i := range guesses {
			attack = append(attack, signIn{fmt.Sprint("user-", i), "Winter2026!", "203.0.113.7"})
		}
		checked, refused := tally("one password sprayed over 200 usernames", spreadBurst(t, bases, attack))
		if checked > addressThreshold || checked == 0 || checked+refused != guesses {
			t.Errorf("%d checked and %d refused of %d sprayed sign-ins over 3 gateways; want at most address_threshold %d checked in all and the rest refused",
				checked, refused, guesses, addressThreshold)
		}
		refusedEverywhere(signIn{"bob", "bobpw", "203.0.113.7"})
		// From another address, bob is not locked out.
		res, err := signIn{"bob", "bobpw", "192.0.2.2"}.send(client, bases[0])
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("bob from another address: %d, want 200", res.StatusCode)
		}
	})
}
