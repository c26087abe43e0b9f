package etcdstore

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Gateways sharing a store learn their index and count, and which of
// them keep equal parts, and the others count one out when it leaves.
func TestJoinMembers(t *testing.T) {
	c := etcdtest.Start(t, 1)
	type seen struct{ index, count, fixed int }
	var mu sync.Mutex
	last := make([]seen, 3)
	cancels := make([]context.CancelFunc, 3)
	for i := range 3 {
		s := openStore(t, c, Options{Prefix: "/members/"})
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		go s.JoinMembers(ctx, i != 1, func(ms keystore.Members) {
			mu.Lock()
			last[i] = seen{ms.Index(), ms.Count(), len(ms.Fixed)}
			mu.Unlock()
		})
	}
	wait := func(what string, ok func([]seen) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			mu.Lock()
			cur := slices.Clone(last)
			mu.Unlock()
			if ok(cur) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: last reports %+v", what, cur)
			}
		}
	}
	wait("three members with indexes 0, 1, 2", func(s []seen) bool {
		idx := []int{s[0].index, s[1].index, s[2].index}
		slices.Sort(idx)
		// The second joined keeping equal parts: every one sees it so.
		return s[0].count == 3 && s[1].count == 3 && s[2].count == 3 && slices.Equal(idx, []int{0, 1, 2}) &&
			s[0].fixed == 1 && s[1].fixed == 1 && s[2].fixed == 1
	})
	cancels[2]()
	wait("two left", func(s []seen) bool {
		return s[0].count == 2 && s[1].count == 2 && s[0].index != s[1].index
	})
	cancels[0]()
	cancels[1]()
}
