package integration

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// TestUnknownKeysCannotLoadTheStore runs the real binary with a budget of
// 20 unknown keys per address (and a negligible refill):
//
//   - 150 valid keys never seen by the gateway, used at once from one
//     address, all pass (keys that exist do not spend the budget);
//   - 300 distinct well-formed unknown keys at once from that address cost
//     at most 20 store reads, the rest refused as over_budget;
//   - one unknown key sent 100 times at once from another address costs
//     one store read;
//   - a valid key keeps working throughout.
func TestUnknownKeysCannotLoadTheStore(t *testing.T) {
	const burst = 20
	g := startHardened(t, "", "unknown_key_budget {\n\t\t\trate 0.001\n\t\t\tburst 20\n\t\t}")
	metrics := "http://" + g.admin + "/metrics"
	reads := func() float64 {
		return metricValue(t, metrics, `caddy_apikeys_store_operation_duration_seconds_count{operation="key_by_hash"}`)
	}
	overBudget := func() float64 {
		return metricValue(t, metrics, `caddy_apikeys_validations_total{result="over_budget"}`)
	}
	from := func(ip net.IP) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 300,
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext}}
	}
	parallel := func(c *http.Client, keys []string) map[int]int {
		var mu sync.Mutex
		statuses := map[int]int{}
		var wg sync.WaitGroup
		for _, k := range keys {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, g.base+"/v1/x", nil)
				req.Header.Set("X-Api-Key", k)
				res, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				mu.Lock()
				statuses[res.StatusCode]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return statuses
	}
	flooder, other := from(net.IPv4(127, 0, 0, 1)), from(net.IPv4(127, 0, 0, 2))

	valid := make([]string, 150)
	for i := range valid {
		valid[i] = g.mint(t, `{"username": "alice", "password": "alicepw"}`).APIKey
	}
	if s := parallel(flooder, valid); s[200] != len(valid) {
		t.Fatalf("%d new valid keys at once from one address: %v, want all 200", len(valid), s)
	}

	before, overBefore := reads(), overBudget()
	unknown := make([]string, 300)
	for i := range unknown {
		unknown[i], _, _ = keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
	}
	if s := parallel(flooder, unknown); s[401] != len(unknown) {
		t.Fatalf("unknown keys: %v", s)
	}
	n, over := reads()-before, overBudget()-overBefore
	t.Logf("300 distinct unknown keys at once from one address: %v store reads, %v refused over budget", n, over)
	if n > burst || n+over != float64(len(unknown)) {
		t.Fatalf("%v store reads and %v refusals over budget for %d unknown keys; want at most %d reads", n, over, len(unknown), burst)
	}
	if s := parallel(flooder, valid[:10]); s[200] != 10 {
		t.Fatalf("valid keys from the flooding address after the flood: %v", s)
	}

	before = reads()
	same, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
	sameKeys := make([]string, 100)
	for i := range sameKeys {
		sameKeys[i] = same
	}
	if s := parallel(other, sameKeys); s[401] != len(sameKeys) {
		t.Fatalf("one unknown key 100 times: %v", s)
	}
	if n := reads() - before; n != 1 {
		t.Fatalf("%v store reads for one unknown key sent 100 times at once, want 1", n)
	}
}
