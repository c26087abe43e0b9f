package caddymodule

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/etcdstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// A membership's listeners hear the last report when they start, then
// every change, and nothing once stopped.
func TestMembersFanOut(t *testing.T) {
	m := &members{listeners: make(map[int]func(keystore.Members))}
	var a, b [][2]int
	heard := func(to *[][2]int) func(keystore.Members) {
		return func(ms keystore.Members) { *to = append(*to, [2]int{ms.Index(), ms.Count()}) }
	}
	// report has gateway self at index i of n.
	report := func(i, n int) {
		ids := []string{"g0", "g1", "g2", "g3"}[:n]
		m.report(keystore.Members{Self: ids[i], IDs: ids})
	}
	stopA := m.listen(heard(&a))
	if len(a) != 0 {
		t.Fatalf("a listener heard %v before any report", a)
	}
	report(0, 2)
	stopB := m.listen(heard(&b))
	report(1, 3)
	stopA()
	report(0, 1)
	stopB()
	report(2, 4)
	if want := [][2]int{{0, 2}, {1, 3}}; !slices.Equal(a, want) {
		t.Errorf("the first listener heard %v, want %v", a, want)
	}
	if want := [][2]int{{0, 2}, {1, 3}, {0, 1}}; !slices.Equal(b, want) {
		t.Errorf("the second listener heard %v, want %v (the last report first)", b, want)
	}
}

// The lockout of an app over a shared store enforces its part of the
// thresholds as gateways come and go, with or without plans; a reload's
// new config has the part at once, and the process is one member however
// many configs and meters use the store.
func TestLockoutFollowsTheGatewaysSharingTheStore(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir()) // the meter's ledger
	c := etcdtest.Start(t, 1)
	const prefix = "/lockout-members/"
	eps, _ := json.Marshal(c.Endpoints())
	store := `{"backend": "etcd", "endpoints": ` + string(eps) + `, "prefix": "` + prefix + `"}`
	lockout := `"lockout": {"account_threshold": 10, "address_threshold": 50}`
	a1, err := provisionApp(t, `{"store": `+store+`, `+lockout+`}`)
	if err != nil {
		t.Fatal(err)
	}
	// Two other gateways, as another process would join.
	var mu sync.Mutex
	others := map[int][2]int{} // each one's last report: index, count
	for g := range 2 {
		s, err := etcdstore.Open(clientv3.Config{Endpoints: c.Endpoints(), Logger: zap.NewNop()}, etcdstore.Options{Prefix: prefix, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		t.Cleanup(func() { cancel(); <-done; _ = s.Close() })
		go func() {
			defer close(done)
			s.JoinMembers(ctx, true, func(ms keystore.Members) {
				mu.Lock()
				others[g] = [2]int{ms.Index(), ms.Count()}
				mu.Unlock()
			})
		}()
	}
	// a1's index is the one the others do not have.
	var index int
	testutil.Eventually(t, 10*time.Second, "three gateways seen by all", func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := map[int]bool{}
		for _, v := range others {
			if v[1] != 3 {
				return false
			}
			seen[v[0]] = true
		}
		if len(seen) != 2 {
			return false
		}
		for index = range 3 {
			if !seen[index] {
				break
			}
		}
		acct, addr := a1.throttle.Limits()
		return acct == int(keystore.PartOf(10, index, 3)) && addr == int(keystore.PartOf(50, index, 3))
	})

	// A reload, now with plans: the new config's lockout has its part
	// before it serves.
	a2, err := provisionApp(t, `{"store": `+store+`, `+lockout+`, "plans": {"p": {"rates": [{"limit": 100, "window": "1m"}]}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if acct, addr := a2.throttle.Limits(); acct != int(keystore.PartOf(10, index, 3)) || addr != int(keystore.PartOf(50, index, 3)) {
		t.Fatalf("a reloaded config's parts: %d and %d, want those of gateway %d of 3", acct, addr, index)
	}
	cli := c.Client(t)
	memberKeys := func() int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, prefix+"members/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if n := memberKeys(); n != 3 {
		t.Fatalf("%d member keys for this process (two configs, a meter) and two others, want 3", n)
	}
	if err := a1.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if n := memberKeys(); n != 3 {
		t.Fatalf("the old config's cleanup left %d member keys, want 3: the new config still shares the store", n)
	}
	if err := a2.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// The last to let go revokes the lease before returning.
	if n := memberKeys(); n != 2 {
		t.Fatalf("after the last config's cleanup, %d member keys, want the others' 2", n)
	}
}
