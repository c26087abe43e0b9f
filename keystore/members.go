package keystore

import "slices"

// Members is this process's place among the gateways sharing a store,
// as the store's membership reports it.
type Members struct {
	// Self is this gateway's member id.
	Self string
	// IDs are the live gateways' ids, sorted; Self is among them.
	IDs []string
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
