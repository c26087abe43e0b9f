package keystore

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// A gateway that keeps equal parts (rate_shares equal, or an earlier
// release) holds its part whatever the tables say, also when it joins
// after a busy gateway took the whole limit: the gateways dividing by the
// load give that part back, so together they admit at most the limit.
func TestRateSharesLeaveFixedGatewaysTheirPart(t *testing.T) {
	rate := Rate{Name: "r", Limit: 100, Window: time.Second}
	shares := newMemShares(time.Millisecond)
	ks := openTestStore(t)
	plan := &Plan{Name: "p", Rates: []Rate{rate}}
	ctx := context.Background()
	var followers []*Meter
	for range 2 {
		m := newTestMeter(t, ks, MeterOptions{})
		m.FollowLoad(ctx, shares)
		followers = append(followers, m)
	}
	two := []string{"g0", "g1"}
	for i, m := range followers {
		m.SetMembers(Members{Self: two[i], IDs: two})
	}
	busy := followers[0].limitsFor(meterKey("k"), plan)
	var mu sync.Mutex
	var admitted []int64 // Unix ns, when each Take that admitted began
	take := func(l *Limits) {
		at := time.Now().UnixNano()
		if v, _ := l.Take(ctx, 0); v.Allowed {
			mu.Lock()
			admitted = append(admitted, at)
			mu.Unlock()
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the load on g0, at about four times the rate, throughout
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				take(busy)
			}
		}
	})
	time.Sleep(3 * rate.Window) // g0 holds the whole limit by now
	// g2 joins, keeping equal parts, and takes its part.
	fixed := newTestMeter(t, ks, MeterOptions{})
	three := Members{IDs: []string{"g0", "g1", "g2"}, Fixed: []string{"g2"}}
	for i, m := range append(followers, fixed) {
		ms := three
		ms.Self = three.IDs[i]
		m.SetMembers(ms)
	}
	joined := time.Now()
	other := fixed.limitsFor(meterKey("k"), plan)
	for time.Since(joined) < 4*rate.Window {
		take(other)
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// From a window after the join (what g0 admitted before it counts a
	// window), no window holds more than the limit. A window here is the
	// window less a little slack for the clock read before each Take.
	slices.Sort(admitted)
	from, most := joined.Add(rate.Window+rate.Window/windowSlots).UnixNano(), 0
	span := int64(rate.Window - 20*time.Millisecond)
	for i, at := range admitted {
		if at < from {
			continue
		}
		j, _ := slices.BinarySearch(admitted, at+span)
		most = max(most, j-i)
	}
	t.Logf("after the fixed gateway joined: at most %d admitted in one window (limit %d, its part %d)", most, rate.Limit, PartOf(rate.Limit, 2, 3))
	if most > int(rate.Limit) {
		t.Fatalf("%d admitted within one window by a gateway dividing by the load and one keeping its part, limit %d", most, rate.Limit)
	}
}
