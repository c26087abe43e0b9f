package keystore

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

// Operators set and add to balances with any int64: a sum past the
// largest balance is refused and changes nothing, a negative one stops at
// 0, and nothing wraps around.
func FuzzAdjustCredits(f *testing.F) {
	for _, c := range [][3]int64{{100, math.MaxInt64, 5}, {math.MaxInt64, 5, -1}, {0, math.MinInt64, math.MaxInt64}, {5, -10, 3}} {
		f.Add(c[0], c[1], c[2])
	}
	s := openTestStore(f)
	kr := NewKeyring(s, Options{FlushInterval: time.Hour, Meter: newTestMeter(f, s, MeterOptions{}), Policy: Policy{
		Plans:       map[string]*Plan{"paid": {Name: "paid", Credits: &Credits{Amount: 10}}},
		DefaultPlan: "paid",
		ConfigUsers: map[string]UserRules{"alice": {}},
	}})
	f.Cleanup(func() { _ = kr.Close() })
	ctx := context.Background()
	m, err := kr.Mint(ctx, owner("alice"), KeyRequest{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, start, add1, add2 int64) {
		start = max(start, 0)
		b, err := kr.AdjustCredits(ctx, m.Key, start, true)
		if err != nil || b.Remaining != start {
			t.Fatalf("set %d: %+v, %v", start, b, err)
		}
		want := start
		for _, add := range []int64{add1, add2} {
			b, err := kr.AdjustCredits(ctx, m.Key, add, false)
			var re *RequestError
			switch overflows := add > 0 && want > math.MaxInt64-add; {
			case overflows && !errors.As(err, &re):
				t.Fatalf("%d + %d: %+v, %v; want a refusal", want, add, b, err)
			case overflows:
			case err != nil || b.Remaining != max(want+add, 0):
				t.Fatalf("%d + %d: %+v, %v; want %d", want, add, b, err, max(want+add, 0))
			default:
				want = b.Remaining
			}
			if got, _, err := kr.BalanceOf(ctx, m.Key); err != nil || got.Remaining != want {
				t.Fatalf("balance after adding %d: %+v, %v; want %d", add, got, err, want)
			}
		}
	})
}
