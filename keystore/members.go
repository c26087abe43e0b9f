package keystore

import "slices"

// Members is this process's place among the gateways sharing a store,
// as the store's membership reports it.
type Members struct {
	// Self is this gateway's member id.
	Self string
	// IDs are the live gateways' ids, sorted; Self is among them.
	IDs []string
	// Fixed are those of IDs that keep an equal part of every rate limit
	// (rate_shares equal, or a release before rate shares), sorted: a
	// gateway dividing by the load counts each as holding that part.
	Fixed []string
}

// Index is Self's position in IDs, or -1.
func (ms Members) Index() int {
	i, ok := slices.BinarySearch(ms.IDs, ms.Self)
	if !ok {
		return -1
	}
	return i
}

// Count is how many gateways are live.
func (ms Members) Count() int { return len(ms.IDs) }

// live reports whether id is a live gateway.
func (ms Members) live(id string) bool {
	_, ok := slices.BinarySearch(ms.IDs, id)
	return ok
}

// part is Self's equal part of limit.
func (ms Members) part(limit int64) int64 { return PartOf(limit, ms.Index(), ms.Count()) }

// fixed reports whether id keeps equal parts.
func (ms Members) fixed(id string) bool {
	_, ok := slices.BinarySearch(ms.Fixed, id)
	return ok
}

// fixedParts is what the fixed gateways other than Self hold of limit.
func (ms Members) fixedParts(limit int64) int64 {
	var sum int64
	for _, id := range ms.Fixed {
		if i, ok := slices.BinarySearch(ms.IDs, id); ok && id != ms.Self {
			sum += PartOf(limit, i, len(ms.IDs))
		}
	}
	return sum
}
