package etcdstore

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// BenchmarkBytesPerKey measures what one key costs a member's database:
// it mints APIKEYS_ETCD_KEYS keys (default 10⁵) for 1 000 owners through a
// Keyring from 256 goroutines into one member started with the production
// settings (etcdtest.ProductionFlags), writes every key's last-used time
// once, as a gateway's flush does after the key's first use, then compacts
// the history away and defragments, as auto-compaction and the operator's
// defragmentation do. It reports the database's size per key before
// compaction, after compaction, and after defragmentation, on disk and
// in use, each over the empty member's, how long the defragmentation
// took, and then what writing every key's last-used time once more adds
// until the next compaction. Every member holds the whole database, so
// the figures are per member whatever the cluster's size. A mint that
// fails (the store's request timeout is 30 s here) is not tried again;
// the keys are counted in etcd.
//
//	APIKEYS_ETCD_KEYS=1000000 go test ./etcdstore -run '^$' -bench BytesPerKey -benchtime 1x -timeout 60m -v
func BenchmarkBytesPerKey(b *testing.B) {
	n := testutil.EnvInt(b, "APIKEYS_ETCD_KEYS", 100_000)
	for b.Loop() {
		c := etcdtest.Start(b, 1)
		// A loaded machine may hold a commit past the default timeout.
		s, err := Open(clientConfig(c), Options{Prefix: "/bench/", RequestTimeout: 30 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		cli := s.Client()
		ctx := context.Background()
		empty := compactAndDefrag(b, cli, c.Endpoints()[0])

		kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour})
		ids := make([]string, n)
		var next, failed atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 256 {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(n) {
						return
					}
					m, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service(fmt.Sprintf("user%d", i%1000)), Operator: true}, keystore.KeyRequest{Title: "bench"})
					if err != nil { // it may have been stored: counted below
						failed.Add(1)
						continue
					}
					ids[i] = m.Key.ID
				}
			})
		}
		wg.Wait()
		loaded := time.Since(start)
		_ = kr.Close()
		ids = slices.DeleteFunc(ids, func(id string) bool { return id == "" })
		count, err := cli.Get(ctx, "/bench/keys/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		n = int(count.Count)
		touchAll(b, s, ids)
		before := memberStatus(b, cli, c.Endpoints()[0])
		ep := c.Endpoints()[0]
		resp, err := cli.Get(ctx, "compact", clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			b.Fatal(err)
		}
		compacted := memberStatus(b, cli, ep)
		defragStart := time.Now()
		if _, err := cli.Defragment(ctx, ep); err != nil {
			b.Fatal(err)
		}
		defrag := time.Since(defragStart)
		after := memberStatus(b, cli, ep)
		// Every key used again: the history one round of last-used
		// writes leaves until the next compaction.
		touchAll(b, s, ids)
		time.Sleep(time.Second) // the backend commits (every 100 ms)
		rewritten := memberStatus(b, cli, ep)

		perKey := func(size, base int64) float64 { return float64(size-base) / float64(n) }
		b.Logf("\n%d keys stored (%d mints failed, and may have been stored) in %v (%.0f keys/s); empty member: %d bytes on disk, %d in use\n"+
			"| | on disk, bytes/key | in use, bytes/key |\n|---|---:|---:|\n"+
			"| after minting and one last-used write each | %.0f | %.0f |\n"+
			"| after compaction | %.0f | %.0f |\n"+
			"| after defragmentation | %.0f | %.0f |\n"+
			"defragmentation took %v; database %d bytes on disk\n"+
			"then every key's last-used time written again: +%.0f bytes/key in use, +%.0f on disk, until compacted",
			n, failed.Load(), loaded.Round(time.Millisecond), float64(n)/loaded.Seconds(), empty.DbSize, empty.DbSizeInUse,
			perKey(before.DbSize, empty.DbSize), perKey(before.DbSizeInUse, empty.DbSizeInUse),
			perKey(compacted.DbSize, empty.DbSize), perKey(compacted.DbSizeInUse, empty.DbSizeInUse),
			perKey(after.DbSize, empty.DbSize), perKey(after.DbSizeInUse, empty.DbSizeInUse),
			defrag.Round(time.Millisecond), after.DbSize,
			perKey(rewritten.DbSizeInUse, after.DbSizeInUse), perKey(rewritten.DbSize, after.DbSize))
		b.ReportMetric(perKey(after.DbSize, empty.DbSize), "bytes/key")
		b.ReportMetric(perKey(before.DbSize, empty.DbSize), "uncompacted-bytes/key")
		b.ReportMetric(perKey(rewritten.DbSizeInUse, after.DbSizeInUse), "rewrite-bytes/key")
		b.ReportMetric(float64(n)/loaded.Seconds(), "keys/s")
		b.ReportMetric(defrag.Seconds(), "defrag-s")
	}
}

// touchAll writes a last-used time for each of the keys ids, as gateways'
// flushes do.
func touchAll(b *testing.B, s *Store, ids []string) {
	b.Helper()
	used := time.Now()
	for chunk := range slices.Chunk(ids, 10_000) {
		times := make(map[string]time.Time, len(chunk))
		for _, id := range chunk {
			times[id] = used
		}
		if err := s.TouchKeys(context.Background(), times); err != nil {
			b.Fatal(err)
		}
	}
}

// compactAndDefrag compacts the cluster's history and defragments the
// member at ep, and returns its status then.
func compactAndDefrag(b *testing.B, cli *clientv3.Client, ep string) *clientv3.StatusResponse {
	b.Helper()
	ctx := context.Background()
	resp, err := cli.Get(ctx, "compact", clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	if resp.Header.Revision > 1 {
		if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := cli.Defragment(ctx, ep); err != nil {
		b.Fatal(err)
	}
	return memberStatus(b, cli, ep)
}

func memberStatus(b *testing.B, cli *clientv3.Client, ep string) *clientv3.StatusResponse {
	b.Helper()
	st, err := cli.Status(context.Background(), ep)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkWatchFanout measures how a revocation reaches the watches on
// the store's prefix: three gateways' stores (each watching keys/ as a
// Keyring's cache does, through WatchKeys) and, in turn, each count of
// APIKEYS_WATCHERS (default "0,20") plain etcd watches of the same
// prefix, every one with a client of its own, spread over three members.
// For each count it deletes APIKEYS_REVOCATIONS keys (default 200) one
// after another through a fourth store, waits until every watch has seen
// each deletion, and logs the delay from sending the deletion to each
// watch's seeing it (p50, p99, max) for the gateways and for the plain
// watches, and the members' CPU time: as a share of one core over 3 s with
// nothing changing, and while revoking, and per revocation above the idle
// share (CPU times are counted in 10 ms ticks), and the CPU share of this
// process, where every watch and the writer run. Everything runs on
// loopback, on the same cores.
//
//	APIKEYS_WATCHERS=0,20,100 go test ./etcdstore -run '^$' -bench WatchFanout -benchtime 1x -timeout 20m -v
func BenchmarkWatchFanout(b *testing.B) {
	counts := []int{0, 20}
	if v := os.Getenv("APIKEYS_WATCHERS"); v != "" {
		counts = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 0 {
				b.Fatalf("APIKEYS_WATCHERS=%q: want counts separated by commas", v)
			}
			counts = append(counts, n)
		}
	}
	revocations := testutil.EnvInt(b, "APIKEYS_REVOCATIONS", 200)
	for b.Loop() {
		c := etcdtest.Start(b, 3)
		eps := c.Endpoints()
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		writer := openBenchStore(b, c)
		keys := make([]keystore.Key, revocations*len(counts))
		for i := range keys {
			keys[i] = storeKey(b, writer)
		}
		seen := make(chan sighting, 4096)
		for g := range 3 {
			s, err := Open(clientv3.Config{Endpoints: eps[g : g+1], DialTimeout: 5 * time.Second, Logger: zap.NewNop()}, Options{Prefix: "/bench/"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			go s.WatchKeys(ctx, &timingWatcher{who: g, seen: seen})
		}
		var table strings.Builder
		fmt.Fprintf(&table, "\n| plain watches | gateways p50 | p99 | max | plain watches p50 | p99 | max | etcd CPU per revocation (3 members, above idle) | etcd CPU idle, share of a core | while revoking | watches' process (all of them, and the writer), share of a core while revoking |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		watchers := 0
		for phase, count := range counts {
			for ; watchers < count; watchers++ {
				cli, err := clientv3.New(clientv3.Config{Endpoints: eps[watchers%3 : watchers%3+1], DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = cli.Close() })
				go watchDeletes(ctx, cli, 3+watchers, seen)
			}
			time.Sleep(time.Second) // watches established, creations delivered
			// What the members spend with nothing changing: heartbeats,
			// and the gateways' sync points (a read and a progress
			// request every SyncInterval each).
			idleCPU, idleStart := clusterCPU(b, c), time.Now()
			time.Sleep(3 * time.Second)
			idle := float64(clusterCPU(b, c)-idleCPU) / float64(time.Since(idleStart))
			drain(seen)
			observers := 3 + watchers
			var gw, plain []time.Duration
			cpuBefore, selfBefore, wallBefore := clusterCPU(b, c), selfCPU(b), time.Now()
			for _, k := range keys[phase*revocations : (phase+1)*revocations] {
				h := hexOf(k.Hash)
				sent := time.Now()
				if _, err := writer.DeleteKey(ctx, k.ID); err != nil {
					b.Fatal(err)
				}
				got := make(map[int]bool, observers)
				timeout := time.After(10 * time.Second)
				for len(got) < observers {
					select {
					case s := <-seen:
						if s.hex != h || got[s.who] {
							continue
						}
						got[s.who] = true
						if s.who < 3 {
							gw = append(gw, s.at.Sub(sent))
						} else {
							plain = append(plain, s.at.Sub(sent))
						}
					case <-timeout:
						b.Fatalf("after 10 s, %d of %d watches had seen the deletion of %s", len(got), observers, h)
					}
				}
			}
			cpu, self, wall := clusterCPU(b, c)-cpuBefore, selfCPU(b)-selfBefore, time.Since(wallBefore)
			g50, g99, gmax := percentiles(gw)
			p50, p99, pmax := percentiles(plain)
			perRevocation := time.Duration((float64(cpu) - idle*float64(wall)) / float64(revocations))
			fmt.Fprintf(&table, "| %d | %v | %v | %v | %v | %v | %v | %v | %.2f | %.2f | %.2f |\n", watchers, g50, g99, gmax, p50, p99, pmax,
				perRevocation.Round(10*time.Microsecond), idle, cpu.Seconds()/wall.Seconds(), self.Seconds()/wall.Seconds())
			b.ReportMetric(float64(g99.Microseconds())/1000, fmt.Sprintf("gateway-p99-ms/%d-watchers", watchers))
			if watchers > 0 {
				b.ReportMetric(float64(p99.Microseconds())/1000, fmt.Sprintf("watcher-p99-ms/%d-watchers", watchers))
			}
			b.ReportMetric(float64(perRevocation.Microseconds()), fmt.Sprintf("etcd-cpu-us/revocation/%d-watchers", watchers))
		}
		b.Logf("%d revocations per row, one at a time, each seen by every watch before the next:%s", revocations, table.String())
	}
}

// A sighting is a watch's seeing the change of the key with digest hex.
type sighting struct {
	who int
	hex string
	at  time.Time
}

// timingWatcher is a keystore.KeyWatcher that reports the changes it is
// told of, as a gateway's cache is told.
type timingWatcher struct {
	who  int
	seen chan<- sighting
}

func (w *timingWatcher) KeyCreated(keystore.Hash) {}
func (w *timingWatcher) KeyChanged(h keystore.Hash) {
	w.seen <- sighting{who: w.who, hex: hexOf(h), at: time.Now()}
}
func (w *timingWatcher) ChangesLost()       {}
func (w *timingWatcher) CaughtUp(time.Time) {}

// watchDeletes watches the keys under the benchmark's prefix as a plain
// etcd client does and reports each deletion until ctx ends.
func watchDeletes(ctx context.Context, cli *clientv3.Client, who int, seen chan<- sighting) {
	const prefix = "/bench/keys/"
	for resp := range cli.Watch(ctx, prefix, clientv3.WithPrefix()) {
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				seen <- sighting{who: who, hex: strings.TrimPrefix(string(ev.Kv.Key), prefix), at: time.Now()}
			}
		}
	}
}

func drain(seen <-chan sighting) {
	for {
		select {
		case <-seen:
		default:
			return
		}
	}
}

// selfCPU is the CPU time this process has used, the watches' side.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func clusterCPU(b *testing.B, c *etcdtest.Cluster) (total time.Duration) {
	for _, m := range c.Members {
		total += m.CPUTime(b)
	}
	return total
}

// percentiles returns the median, the 99th percentile and the largest of
// ds, rounded to 0.1 ms.
func percentiles(ds []time.Duration) (p50, p99, most time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return r(ds[len(ds)/2]), r(ds[len(ds)*99/100]), r(ds[len(ds)-1])
}
