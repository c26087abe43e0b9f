package integration

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// TestLimitsAcrossThreeGateways: three gateways over a three-member etcd
// cluster share credits exactly and a rate limit within its parts.
func TestLimitsAcrossThreeGateways(t *testing.T) {
	c := etcdtest.Start(t, 3)
	up := newLimitsUpstream(t)
	gws := startSharingGateways(t, c, "prefix /limits/", up.URL, 3)
	a := gws[0]
	urls := func(gs ...*limitsGateway) []string {
		var u []string
		for _, g := range gs {
			u = append(u, g.base+"/v1/x")
		}
		return u
	}
	mint := func(user string) string {
		return decodeCreated(t, post(t, a.base+"/api/create_api_key", `{"auth": {"username": "`+user+`", "password": "`+user+`pw"}}`)).APIKey
	}

	t.Run("credits: 333 of 1000 at 3 across a kill -9", func(t *testing.T) {
		key := mint("alice")
		rev := c.Revision(t)
		var out outcome
		stop := make(chan struct{})
		defer stopOnFailure(t, &stop)
		done := make(chan struct{})
		go func() {
			load{urls: urls(gws...), key: key, clients: 64, waitRefused: 50 * time.Millisecond, stop: stop}.run(&out)
			close(done)
		}()
		waitAdmitted(t, &out, 150)
		cut := killCut(&out, gws[2].kill)
		killedAt := out.ok.Load()
		gws[2].start()
		quiet(&out, 5*time.Second, 90*time.Second)
		close(stop)
		<-done
		t.Logf("admitted %d (%d before one gateway was killed), refused %d, failed while down %d; etcd revisions meanwhile: %d",
			out.ok.Load(), killedAt, out.limited.Load(), out.failed.Load(), c.Revision(t)-rev)
		checkCredits(t, &out, cut)
	})

	t.Run("credits held by idle gateways move to the busy one", func(t *testing.T) {
		key := mint("alice")
		var out outcome
		stop := make(chan struct{})
		defer stopOnFailure(t, &stop)
		spread := load{urls: urls(gws...), key: key, clients: 64, stop: stop}
		done := make(chan struct{})
		go func() { spread.run(&out); close(done) }()
		waitAdmitted(t, &out, 150)
		close(stop)
		<-done
		moved := time.Now()
		var last atomic.Int64
		stop = make(chan struct{})
		done = make(chan struct{})
		go func() {
			load{urls: urls(a), key: key, clients: 64, waitRefused: 50 * time.Millisecond, stop: stop}.run(&out)
			close(done)
		}()
		deadline := time.After(30 * time.Second)
		for out.ok.Load() < 333 {
			select {
			case <-deadline:
				close(stop)
				<-done
				t.Fatalf("after the load moved to one gateway, %d of 333 admitted within 30s", out.ok.Load())
			case <-time.After(time.Millisecond):
			}
		}
		last.Store(int64(time.Since(moved)))
		// Any 334th would show now: a's 64 clients have been refused
		// 960 times more (some 15 each, as in about a second).
		refused := out.limited.Load()
		testutil.Eventually(t, 60*time.Second, "more refusals after the 333rd", func() bool { return out.limited.Load() >= refused+64*15 })
		close(stop)
		<-done
		t.Logf("the last of 333 admitted %v after the load moved to one gateway; %d admitted in all",
			time.Duration(last.Load()).Round(time.Millisecond), out.ok.Load())
		if got := out.ok.Load(); got != 333 {
			t.Fatalf("%d admitted, want exactly 333", got)
		}
	})

	t.Run("rate: 100 per 10s across three gateways", func(t *testing.T) {
		key := mint("carol")
		var out outcome
		stop := make(chan struct{})
		time.AfterFunc(25*time.Second, func() { close(stop) })
		// 64 clients every 3.2 s send 20/s, twice the rate.
		load{urls: urls(gws...), key: key, clients: 64, wait: 3200 * time.Millisecond, stop: stop}.run(&out)
		worst := worstWindow(out.admitted, 10*time.Second)
		t.Logf("admitted %d, refused %d in 25s; the most in any 10s window: %d (limit 100)", out.ok.Load(), out.limited.Load(), worst)
		if worst > 110 {
			t.Fatalf("%d requests admitted within one 10s window by three gateways, limit 100 (+10%%)", worst)
		}
		if out.ok.Load() < 200 {
			t.Fatalf("only %d admitted in 25s at twice a rate of 10/s", out.ok.Load())
		}
	})
}

// startSharingGateways starts n limits gateways over c, with options
// (lines of the store etcd block), and returns once each counts all n.
func startSharingGateways(t *testing.T, c *etcdtest.Cluster, options, upstream string, n int) []*limitsGateway {
	t.Helper()
	store := "store etcd " + strings.Join(c.Endpoints(), " ") + " {\n\t\t\t" + options + "\n\t\t}"
	var gws []*limitsGateway
	for range n {
		gws = append(gws, startLimitsGateway(t, store, upstream))
	}
	for _, g := range gws {
		untilLogged(t, g.runningCaddy, fmt.Sprintf(`"msg":"gateways sharing the store","count":%d`, n))
	}
	return gws
}

// quiet returns once out has admitted nothing for d, or after most. It
// waits for an absence (that nothing more is admitted), of which no
// event tells: its sleep is the pace at which it looks.
func quiet(out *outcome, d, most time.Duration) {
	end := time.Now().Add(most)
	last, since := out.ok.Load(), time.Now()
	for time.Now().Before(end) && time.Since(since) < d {
		time.Sleep(10 * time.Millisecond)
		if n := out.ok.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}
