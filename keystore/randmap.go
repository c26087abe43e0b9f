package keystore

import "math/rand/v2"

// randomMap is a map from key digest to V that, when full, evicts entries
// chosen uniformly at random. Caddy's basic_auth cache evicts at random
// for the same reason: Go's map iteration order is not random enough, and
// dropping the first entries it yields skews eviction towards some
// digests. Caddy finds each victim by walking the map; here a slice of
// the digests makes it O(1), paid on fills and removals, never on reads.
type randomMap[V any] struct {
	m     map[Hash]randomMapEntry[V]
	order []Hash // the digests of m; entry.at is the index of each
}

type randomMapEntry[V any] struct {
	v  V
	at int
}

func newRandomMap[V any]() randomMap[V] {
	return randomMap[V]{m: make(map[Hash]randomMapEntry[V])}
}

func (r *randomMap[V]) get(h Hash) (v V, ok bool) {
	e, ok := r.m[h]
	return e.v, ok
}

func (r *randomMap[V]) len() int { return len(r.m) }

// put sets h to v. When that would make the map hold more than limit
// entries, it first evicts a tenth of them (at least one), at random, so
// that eviction runs once per many fills.
func (r *randomMap[V]) put(h Hash, v V, limit int) {
	if e, ok := r.m[h]; ok {
		r.m[h] = randomMapEntry[V]{v, e.at}
		return
	}
	if len(r.m) >= limit {
		for range max(limit/10, 1) {
			r.delete(r.order[rand.IntN(len(r.order))])
		}
	}
	r.m[h] = randomMapEntry[V]{v, len(r.order)}
	r.order = append(r.order, h)
}

// delete removes h, moving the last digest into its place in order.
func (r *randomMap[V]) delete(h Hash) {
	e, ok := r.m[h]
	if !ok {
		return
	}
	last := len(r.order) - 1
	if e.at != last {
		moved := r.order[last]
		r.order[e.at] = moved
		m := r.m[moved]
		m.at = e.at
		r.m[moved] = m
	}
	r.order = r.order[:last]
	delete(r.m, h)
}
