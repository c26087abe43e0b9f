package etcdstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// shareLog is a keystore.ShareFollower that keeps what it heard.
type shareLog struct {
	mu     sync.Mutex
	tables map[string]keystore.VersionedShareTable
	loads  int
}

func (l *shareLog) SharesLoaded(tables map[string]keystore.VersionedShareTable, _ int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tables, l.loads = tables, l.loads+1
}

func (l *shareLog) ShareChanged(id string, t *keystore.ShareTable, rev int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t == nil {
		delete(l.tables, id)
		return
	}
	l.tables[id] = keystore.VersionedShareTable{Table: *t, Rev: rev}
}

func (l *shareLog) grantOf(id, member string) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.tables[id]
	if !ok {
		return 0, false
	}
	for _, e := range v.Table.Entries {
		if e.Member == member {
			return e.Grant, true
		}
	}
	return 0, true
}

// Share tables change only by compare-and-swap, and every gateway
// following them hears each change, from the tables that were there
// when it started.
func TestShareTablesSwapAndFollow(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := openStore(t, c, Options{})
	b := openStore(t, c, Options{Prefix: a.prefix})
	ctx := context.Background()
	rate := keystore.Rate{Name: "r", Limit: 100, Window: 10 * time.Second}
	id := keystore.ShareTableID("k", rate)
	table := func(ga, gb int64) *keystore.ShareTable {
		return &keystore.ShareTable{Account: "k", Rate: rate, Entries: []keystore.ShareEntry{{Member: "a", Grant: ga, Wants: true}, {Member: "b", Grant: gb}}}
	}
	rev, ok, err := a.SwapShareTable(ctx, id, 0, table(34, 66))
	if err != nil || !ok {
		t.Fatalf("creating: %v %v", ok, err)
	}
	if _, ok, err := b.SwapShareTable(ctx, id, 0, table(50, 50)); err != nil || ok {
		t.Fatalf("creating again: %v %v, want refused", ok, err)
	}

	var heard shareLog
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); b.FollowShareTables(fctx, &heard) }()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 5*time.Second, "the table that was there", func() bool { g, _ := heard.grantOf(id, "a"); return g == 34 })

	next, ok, err := b.SwapShareTable(ctx, id, rev, table(90, 10))
	if err != nil || !ok || next <= rev {
		t.Fatalf("swapping at rev %d: %d %v %v", rev, next, ok, err)
	}
	if _, ok, _ := a.SwapShareTable(ctx, id, rev, table(10, 90)); ok {
		t.Fatal("a swap at a revision that is no longer the table's was written")
	}
	testutil.Eventually(t, 5*time.Second, "the swap", func() bool { g, _ := heard.grantOf(id, "a"); return g == 90 })

	if _, ok, err := a.SwapShareTable(ctx, id, next, nil); err != nil || !ok {
		t.Fatalf("deleting: %v %v", ok, err)
	}
	testutil.Eventually(t, 5*time.Second, "the deletion", func() bool { _, there := heard.grantOf(id, "a"); return !there })
	if heard.loads != 1 {
		t.Fatalf("loaded %d times, want once", heard.loads)
	}
}
