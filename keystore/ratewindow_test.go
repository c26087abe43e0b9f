package keystore

import (
	"math/rand/v2"
	"testing"
	"time"
)

// No interval of the window's length admits more than the limit, whatever
// the arrival pattern, and a client under the rate is not refused much.
func TestRateWindowNeverAdmitsMoreThanTheLimit(t *testing.T) {
	const limit, width = 100, 10 * time.Second
	for _, pattern := range []struct {
		name string
		gap  func(r *rand.Rand) time.Duration
	}{
		{"bursts", func(r *rand.Rand) time.Duration {
			if r.IntN(50) == 0 {
				return time.Duration(r.Int64N(int64(3 * time.Second)))
			}
			return time.Microsecond
		}},
		{"twice the rate", func(*rand.Rand) time.Duration { return width / (2 * limit) }},
		{"random", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(int64(width / limit))) }},
	} {
		t.Run(pattern.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			w := newRateWindow(limit, width)
			now := time.Unix(1_800_000_000, 0).UnixNano()
			var admitted []int64
			for range 20_000 {
				now += int64(pattern.gap(r))
				w.advance(now)
				if !w.allows(1) {
					if w.wait(now, 1) <= 0 {
						t.Fatal("refused with no wait")
					}
					continue
				}
				w.add(1)
				admitted = append(admitted, now)
				// Count the admissions in (now-width, now].
				n := 0
				for i := len(admitted) - 1; i >= 0 && admitted[i] > now-int64(width); i-- {
					n++
				}
				if n > limit {
					t.Fatalf("%d admitted within one window of %v", n, width)
				}
			}
			if len(admitted) == 0 {
				t.Fatal("nothing admitted")
			}
		})
	}
}

// A client sending twice the rate is refused its excess, never most of
// its rate: after the first window, every interval of the window's length
// admits at least 90 of 100.
func TestRateWindowTwiceTheRateGetsNearlyTheLimit(t *testing.T) {
	const limit, width = 100, 10 * time.Second
	w := newRateWindow(limit, width)
	start := time.Unix(1_800_000_000, 0).UnixNano()
	now := start
	var admitted []int64
	for now < start+int64(10*width) {
		now += int64(width) / (2 * limit)
		w.advance(now)
		if w.allows(1) {
			w.add(1)
			admitted = append(admitted, now)
		}
	}
	least := limit
	for from := start + int64(width); from+int64(width) <= now; from += int64(width) / 100 {
		n := 0
		for _, at := range admitted {
			if at > from && at <= from+int64(width) {
				n++
			}
		}
		least = min(least, n)
	}
	if least < 90 {
		t.Fatalf("at twice the rate, one window admitted only %d of %d", least, limit)
	}
	t.Logf("at twice the rate, the least admitted in a window after the first: %d of %d", least, limit)
}

func TestRateWindowSteadyClientUnderTheRate(t *testing.T) {
	const limit, width = 100, 10 * time.Second
	w := newRateWindow(limit, width)
	now := time.Unix(1_800_000_000, 0).UnixNano()
	refused := 0
	for range 10_000 {
		now += int64(width) / (limit * 9 / 10) // 90% of the rate
		w.advance(now)
		if !w.allows(1) {
			refused++
			continue
		}
		w.add(1)
	}
	if refused > 0 {
		t.Fatalf("%d of 10000 requests refused at 90%% of the rate", refused)
	}
}

func TestRateWindowWaitAndReset(t *testing.T) {
	w := newRateWindow(3, 10*time.Second)
	now := time.Unix(1_800_000_000, 0).UnixNano()
	w.advance(now)
	for range 3 {
		w.add(1)
	}
	if w.allows(1) || w.remaining() != 0 {
		t.Fatal("a full window allows more")
	}
	wait := w.wait(now, 1)
	if wait <= 10*time.Second || wait > 10*time.Second+10*time.Second/windowSlots {
		t.Fatalf("wait %v, want just over the window", wait)
	}
	if reset := w.resetIn(now); reset != wait {
		t.Fatalf("reset %v, want %v", reset, wait)
	}
	now += int64(wait)
	w.advance(now)
	if !w.allows(3) || w.resetIn(now) != 0 {
		t.Fatalf("after the wait: remaining %d", w.remaining())
	}
	if w.wait(now, 4) != 10*time.Second/windowSlots*(windowSlots+1) {
		t.Fatal("more than the limit at once must wait a whole window")
	}
}
