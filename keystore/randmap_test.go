package keystore

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

func digest(i int) Hash {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	return Hash(sha256.Sum256(b[:]))
}

// The map stays within its limit and its index stays consistent through
// fills, evictions and deletes.
func TestRandomMapBounded(t *testing.T) {
	r := newRandomMap[int]()
	const limit = 1000
	for i := range 20_000 {
		r.put(digest(i), i, limit)
		if r.len() > limit {
			t.Fatalf("%d entries, limit %d", r.len(), limit)
		}
		if i%997 == 0 {
			r.delete(r.order[i%len(r.order)])
			r.delete(digest(-1)) // absent: nothing happens
		}
	}
	if len(r.order) != r.len() {
		t.Fatalf("order holds %d digests for %d entries", len(r.order), r.len())
	}
	for i, h := range r.order {
		e, ok := r.m[h]
		if !ok || e.at != i || digest(e.v) != h {
			t.Fatalf("digest at %d: entry %+v (present %v)", i, e, ok)
		}
	}
}

// Eviction gives every entry the same chance to go, wherever its digest
// falls: over 300 full maps, each of 1 000 entries is evicted about 30
// times (a tenth of the time), none never and none three times as often.
func TestRandomMapEvictsEvenly(t *testing.T) {
	const limit, trials = 1000, 300
	evicted := make([]int, limit)
	for range trials {
		r := newRandomMap[int]()
		for i := range limit {
			r.put(digest(i), i, limit)
		}
		r.put(digest(limit), limit, limit) // full: a tenth goes
		for i := range limit {
			if _, ok := r.get(digest(i)); !ok {
				evicted[i]++
			}
		}
	}
	for i, n := range evicted {
		if n == 0 || n > 90 {
			t.Fatalf("entry %d evicted %d times in %d trials, expected about %d", i, n, trials, trials/10)
		}
	}
}
