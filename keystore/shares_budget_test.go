package keystore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Clients running many keys over their limits at once, each key's load
// all on one gateway (the pattern that makes tables), cannot make the
// gateways write share tables faster than their budget, and no key is
// admitted more than its limit by the gateways together.
func TestShareTableWritesAreBudgeted(t *testing.T) {
	const gateways, keys, seconds = 3, 600, 3
	rate := Rate{Name: "r", Limit: 20, Window: time.Second}
	shares := newMemShares(time.Millisecond)
	ks := openTestStore(t)
	ids := []string{"g0", "g1", "g2"}
	var meters []*Meter
	for range gateways {
		m := newTestMeter(t, ks, MeterOptions{})
		m.FollowLoad(context.Background(), shares)
		meters = append(meters, m)
	}
	for i, m := range meters {
		m.SetMembers(Members{Self: ids[i], IDs: ids})
	}
	plan := &Plan{Name: "p", Rates: []Rate{rate}}
	limits := make([][]*Limits, gateways)
	for g, m := range meters {
		for k := range keys {
			limits[g] = append(limits[g], m.limitsFor(meterKey(fmt.Sprintf("k%d", k)), plan))
		}
	}
	admitted := make([][]int, gateways) // [gateway][key]
	for g := range admitted {
		admitted[g] = make([]int, keys)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for g := range gateways {
		for w := range 4 {
			wg.Go(func() {
				for time.Since(start) < seconds*time.Second {
					for k := w; k < keys; k += 4 {
						if k%gateways != g { // each key's load on one gateway
							continue
						}
						if v, _ := limits[g][k].Take(context.Background(), 0); v.Allowed {
							admitted[g][k]++
						}
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	shares.mu.Lock()
	writes, tables := len(shares.history), len(shares.tables)
	shares.mu.Unlock()
	bound := gateways * (shareWriteBurst + int(shareWriteRate*elapsed.Seconds()))
	t.Logf("%d keys over a limit of %d/s on %d gateways for %v: %d table writes (budget %d), %d tables", keys, rate.Limit, gateways, elapsed.Round(time.Millisecond), writes, bound, tables)
	if writes > bound {
		t.Fatalf("%d share table writes in %v by %d gateways, budget %d", writes, elapsed, gateways, bound)
	}
	// Whatever was or was not written, no key got more than its limit per
	// window: at most limit × (windows run + 1) in all.
	most := int(rate.Limit) * (int(elapsed/rate.Window) + 1)
	for k := range keys {
		n := 0
		for g := range gateways {
			n += admitted[g][k]
		}
		if n > most {
			t.Fatalf("key %d admitted %d times in %v, more than %d windows of %d", k, n, elapsed, most/int(rate.Limit), rate.Limit)
		}
	}
}
