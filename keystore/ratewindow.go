package keystore

import "time"

// windowSlots is how many slots a rate window is counted in. A request is
// admitted only if the slots that could overlap the last window hold
// fewer than the limit, so no interval of the window's length ever
// admits more than the limit; the price is that a window can act up to a
// thirtieth longer than configured. Under constant overload a window
// admits what the same slots admitted one ring earlier, so a client
// refused at twice the rate still gets at least 1 - 2/windowSlots of the
// limit in every window (93 of 100 here; a ring of ten slots gave 80).
const windowSlots = 30

// rateWindow counts the requests admitted in the recent past for one
// limit: a ring of windowSlots+1 slot counters, enough to cover any
// interval of the window's length. It is not safe for concurrent use.
type rateWindow struct {
	limit  int64
	slot   int64 // width of a slot, ns
	head   int64 // index of the newest slot since the Unix epoch
	sum    int64
	counts [windowSlots + 1]int64
}

func newRateWindow(limit int64, width time.Duration) rateWindow {
	slot := int64(width) / windowSlots
	if slot <= 0 {
		slot = 1
	}
	return rateWindow{limit: limit, slot: slot}
}

// advance forgets the slots that can no longer overlap the last window
// at now (Unix ns).
func (w *rateWindow) advance(now int64) {
	cur := now / w.slot
	if cur <= w.head {
		return
	}
	if cur-w.head > windowSlots {
		w.counts, w.sum = [windowSlots + 1]int64{}, 0
	} else {
		for i := w.head + 1; i <= cur; i++ {
			j := w.index(i)
			w.sum -= w.counts[j]
			w.counts[j] = 0
		}
	}
	w.head = cur
}

// allows reports whether n more requests fit at now; advance first.
func (w *rateWindow) allows(n int64) bool { return w.sum+n <= w.limit }

// add counts n requests at the newest slot; advance first.
func (w *rateWindow) add(n int64) {
	w.counts[w.index(w.head)] += n
	w.sum += n
}

// remaining is how many more requests fit now; advance first.
func (w *rateWindow) remaining() int64 { return max(w.limit-w.sum, 0) }

// wait is how long from now until n more requests fit (0 if they fit
// now, or the whole window if they never can); advance first.
func (w *rateWindow) wait(now, n int64) time.Duration {
	need := w.sum + n - w.limit
	if need <= 0 {
		return 0
	}
	if n > w.limit {
		return time.Duration(w.slot * (windowSlots + 1))
	}
	// Slots leave the count oldest first: slot i stops counting when the
	// head reaches i+windowSlots+1.
	for i := w.head - windowSlots; i <= w.head; i++ {
		need -= w.counts[w.index(i)]
		if need <= 0 {
			return time.Duration((i+windowSlots+1)*w.slot - now)
		}
	}
	return time.Duration(w.slot * (windowSlots + 1))
}

// resetIn is how long from now until the window counts nothing, for the
// RateLimit field's effective window; advance first.
func (w *rateWindow) resetIn(now int64) time.Duration {
	for i := w.head; i >= w.head-windowSlots; i-- {
		if w.counts[w.index(i)] != 0 {
			return time.Duration((i+windowSlots+1)*w.slot - now)
		}
	}
	return 0
}

func (w *rateWindow) index(slot int64) int64 {
	return ((slot % (windowSlots + 1)) + windowSlots + 1) % (windowSlots + 1)
}
