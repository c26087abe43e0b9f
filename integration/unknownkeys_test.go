package integration

import (
	"net/http"
	"sync"
	"testing"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// TestUnknownKeysCannotLoadTheStore floods the real binary, from one
// address, with 300 distinct well-formed unknown keys at once and then
// with one unknown key 100 times at once: the store is read at most the
// budget's burst for the first, and once for the second; a valid key
// keeps working throughout.
func TestUnknownKeysCannotLoadTheStore(t *testing.T) {
	const burst = 20
	g := startHardened(t, "", "unknown_key_budget {\n\t\t\trate 0.001\n\t\t\tburst 20\n\t\t}")
	metrics := "http://" + g.admin + "/metrics"
	const reads = `caddy_apikeys_store_operation_duration_seconds_count{operation="key_by_hash"}`
	valid := g.mint(t, `{"username": "alice", "password": "alicepw"}`).APIKey
	if !g.works(t, "X-Api-Key", valid) {
		t.Fatal("valid key refused")
	}
	parallel := func(n int, key func(i int) string) (statuses map[int]int) {
		var mu sync.Mutex
		statuses = map[int]int{}
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				r := do(t, http.MethodGet, g.base+"/v1/x", "", "X-Api-Key", key(i))
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return statuses
	}

	// One unknown key, many times at once: one read (the store is read
	// before the budget is spent).
	before := metricValue(t, metrics, reads)
	same, _ := keystore.NewKey(keystore.DefaultPrefix)
	if s := parallel(100, func(int) string { return same }); s[401] != 100 {
		t.Fatalf("one unknown key: %v", s)
	}
	if n := metricValue(t, metrics, reads) - before; n != 1 {
		t.Fatalf("%v store reads for one unknown key sent 100 times at once, want 1", n)
	}

	before = metricValue(t, metrics, reads)
	overBefore := metricValue(t, metrics, `caddy_apikeys_validations_total{result="over_budget"}`)
	keys := make([]string, 300)
	for i := range keys {
		keys[i], _ = keystore.NewKey(keystore.DefaultPrefix)
	}
	if s := parallel(len(keys), func(i int) string { return keys[i] }); s[401] != len(keys) {
		t.Fatalf("unknown keys: %v", s)
	}
	n := metricValue(t, metrics, reads) - before
	over := metricValue(t, metrics, `caddy_apikeys_validations_total{result="over_budget"}`) - overBefore
	t.Logf("300 distinct unknown keys at once from one address: %v store reads, %v refused over budget", n, over)
	if n > burst || n+over != float64(len(keys)) {
		t.Fatalf("%v store reads and %v refusals over budget for %d unknown keys; want at most %d reads", n, over, len(keys), burst)
	}
	if !g.works(t, "X-Api-Key", valid) {
		t.Fatal("valid key refused after the flood")
	}
}
