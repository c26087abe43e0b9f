package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
)

// TestRateSharesFollowTheLoad: a rate of 100/10s on one key, shared by 3
// and by 5 gateways over a three-member etcd, 64 clients at twice the
// rate, with the load spread over the gateways, all on one, and moving
// from one to the next every 5 s. Both ways of dividing the limit run in
// the same test, one after the other, on their own prefixes and gateways
// (one at a time, so that a loaded machine does not delay the answers a
// window counts): with rate_shares follow_load (the default) no window
// admits more than 110, and after the first window one busy gateway
// admits at least 90 in every window and a moving load at least 80; with
// rate_shares equal the same safety holds, and the log shows what a
// gateway's equal part leaves to a client whose load lands on it.
func TestRateSharesFollowTheLoad(t *testing.T) {
	c := etcdtest.Start(t, 3)
	up := newLimitsUpstream(t)
	const (
		limit    = 100
		window   = 10 * time.Second
		run      = 40 * time.Second
		moveEach = 5 * time.Second
	)
	for _, n := range []int{3, 5} {
		for _, design := range []string{"follow_load", "equal"} {
			t.Run(fmt.Sprintf("%d gateways, %s", n, design), func(t *testing.T) {
				type scenario struct {
					load  string
					out   *outcome
					l     load
					keyID string // names its share table
				}
				var scenarios []*scenario
				prefix := fmt.Sprintf("/shares-%d-%s/", n, design)
				gws := startSharingGateways(t, c, fmt.Sprintf("prefix %s\n\t\t\trate_shares %s", prefix, design), up.URL, n)
				start := time.Now().Add(2 * time.Second) // once every load is set up
				var all []string
				for _, g := range gws {
					all = append(all, g.base+"/v1/x")
				}
				// 64 clients, each every 3.2 s: 20/s, twice the rate.
				base := load{clients: 64, wait: 3200 * time.Millisecond}
				spread, one, moving := base, base, base
				spread.urls, one.urls, moving.urls = all, all[1:2], all
				moving.pick = func(int, int) string {
					return all[int(max(time.Since(start), 0)/moveEach)%n]
				}
				for _, s := range []struct {
					name string
					l    load
				}{{"spread evenly", spread}, {"all on one gateway", one}, {"moving every 5s", moving}} {
					k := decodeCreated(t, post(t, gws[0].base+"/api/create_api_key", `{"auth": {"username": "carol", "password": "carolpw"}}`))
					s.l.key = k.APIKey
					scenarios = append(scenarios, &scenario{load: s.name, out: &outcome{}, l: s.l, keyID: k.ID})
				}
				// Count the share table writes of each key.
				writes := make(map[string]int)
				var writesMu sync.Mutex
				ctx, cancel := context.WithCancel(context.Background())
				watching := make(chan struct{})
				go func() {
					defer close(watching)
					for resp := range c.Client(t).Watch(ctx, prefix+"shares/", clientv3.WithPrefix()) {
						writesMu.Lock()
						for _, ev := range resp.Events {
							account, _, _ := strings.Cut(strings.TrimPrefix(string(ev.Kv.Key), prefix+"shares/"), "/")
							writes[account]++
						}
						writesMu.Unlock()
					}
				}()
				time.Sleep(time.Until(start))
				stop := make(chan struct{})
				time.AfterFunc(run, func() { close(stop) })
				var wg sync.WaitGroup
				for _, s := range scenarios {
					s.l.stop = stop
					wg.Go(func() { s.l.run(s.out) })
				}
				wg.Wait()
				cancel()
				<-watching
				end := start.Add(run)
				t.Logf("%d gateways, rate_shares %s, rate 100/10s, 64 clients at 20/s for %v: requests surely admitted in one 10s window", n, design, run)
				t.Logf("%-20s %8s %8s %9s %8s %12s", "load", "most", "least*", "admitted", "refused", "table writes")
				for _, s := range scenarios {
					most := worstWindow(s.out.admitted, window)
					least := leastWindow(s.out.admitted, window, start.Add(window), end)
					t.Logf("%-20s %8d %8d %9d %8d %12d", s.load, most, least, s.out.ok.Load(), s.out.limited.Load(), writes[s.keyID])
					if most > limit*11/10 {
						t.Errorf("rate_shares %s, %s: %d admitted within one 10s window, limit %d (+10%%)", design, s.load, most, limit)
					}
					if design != "follow_load" {
						continue
					}
					switch want := map[string]int{"all on one gateway": 90, "moving every 5s": 80}[s.load]; {
					case want > 0 && least < want:
						t.Errorf("rate_shares follow_load, %s: only %d admitted in one 10s window after the first, want at least %d", s.load, least, want)
					}
				}
				t.Logf("* least: the fewest in any 10s window after the first")
			})
		}
	}
}

// TestRateShareOfAKilledGateway: a gateway holding nearly all of a key's
// 100/10s (all the load was on it) is killed with -9, and the load moves
// to another gateway. The others take its share back only once nothing
// it admitted can count: a window after its membership lapsed. So no
// window ever admits more than the limit, and the load gets the whole
// limit again about lease + window after the kill.
func TestRateShareOfAKilledGateway(t *testing.T) {
	c := etcdtest.Start(t, 3)
	up := newLimitsUpstream(t)
	gws := startSharingGateways(t, c, "prefix /shares-killed/", up.URL, 3)
	key := decodeCreated(t, post(t, gws[0].base+"/api/create_api_key", `{"auth": {"username": "carol", "password": "carolpw"}}`)).APIKey
	const window, before, after = 10 * time.Second, 20 * time.Second, 40 * time.Second
	var moved atomic.Bool
	on := func(int, int) string {
		if moved.Load() {
			return gws[2].base + "/v1/x"
		}
		return gws[1].base + "/v1/x"
	}
	var out outcome
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	go func() {
		load{urls: []string{""}, pick: on, key: key, clients: 64, wait: 3200 * time.Millisecond, stop: stop}.run(&out)
		close(done)
	}()
	time.Sleep(before)
	gws[1].kill()
	killedAt := time.Now()
	moved.Store(true)
	time.Sleep(after)
	close(stop)
	<-done
	most := worstWindow(out.admitted, window)
	// The first window after the kill that admitted 90 or more.
	var back time.Duration = -1
	for from := killedAt; !from.Add(window).After(killedAt.Add(after)); from = from.Add(window / 100) {
		if leastWindow(out.admitted, window, from, from.Add(window)) >= 90 {
			back = from.Add(window).Sub(killedAt)
			break
		}
	}
	t.Logf("admitted %d in %v; the most in any 10s window: %d; before the kill the busy gateway's windows had at least %d; after it, the first window of 90 or more ended %v after the kill",
		out.ok.Load(), time.Since(start).Round(time.Second), most, leastWindow(out.admitted, window, start.Add(window), killedAt), back.Round(100*time.Millisecond))
	if most > 110 {
		t.Fatalf("%d admitted within one 10s window across the kill, limit 100 (+10%%)", most)
	}
	if back < 0 {
		t.Fatalf("no 10s window admitted 90 within %v after the gateway holding the share was killed", after)
	}
}

// TestRateSharesChangeWaitsForARestart: how a gateway divides rate limits
// outlives a reload (switching while it holds grants could make it
// enforce more than the tables give it), so a reload that changes
// rate_shares says that it takes effect at the next start.
func TestRateSharesChangeWaitsForARestart(t *testing.T) {
	c := etcdtest.Start(t, 1)
	up := newLimitsUpstream(t)
	gws := startSharingGateways(t, c, "prefix /shares-reload/", up.URL, 2)
	g := gws[0]
	cfg := string(mustReadTB(t, g.config))
	changed := strings.Replace(cfg, "prefix /shares-reload/", "prefix /shares-reload/\n\t\t\trate_shares equal", 1)
	if changed == cfg {
		t.Fatal("the store block was not found in the config")
	}
	loadConfig(t, g.adminAddr(), changed)
	untilLogged(t, g.runningCaddy, `"msg":"rate_shares changed: it takes effect when the gateway restarts"`)
}
