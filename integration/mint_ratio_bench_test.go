package integration

import (
	"cmp"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// BenchmarkMintEtcdAgainstBolt mints as BenchmarkMintCurve does (wrk, 64
// connections over loopback, an HS256 JWT, the gateway binary) into bbolt
// and into an etcd cluster of APIKEYS_MINT_MEMBERS members (default 3),
// all sharing the machine's cores, in windows of 3 s that alternate
// between the two for APIKEYS_MINT_ROUNDS rounds (default 7), so that the
// ratio of their rates is taken from one run. It logs for each store the
// median keys/s and the gateway's CPU per key, for etcd also its members'
// CPU per key and their WAL fsyncs and backend commits a second, and the
// median over rounds of etcd's keys/s over bbolt's.
//
//	go test ./integration -run '^$' -bench MintEtcdAgainstBolt -benchtime 1x -timeout 30m -v
func BenchmarkMintEtcdAgainstBolt(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Skip("needs wrk (bench/run.sh installs it)")
	}
	rounds := testutil.EnvInt(b, "APIKEYS_MINT_ROUNDS", 7)
	members := testutil.EnvInt(b, "APIKEYS_MINT_MEMBERS", 3)
	hash, token := mintCredentials(b, bcrypt.MinCost) // the password is not used
	body, script := mintScript(b, "jwt", token)
	gateway := func(etcd bool) *mintGateway {
		g := &mintGateway{binary: caddyBinary(b), dir: b.TempDir(), ports: holdPorts(b, 2), hash: string(hash), body: body, script: script, newEtcd: etcd, members: members}
		g.start(b, "mint")
		return g
	}
	bolt, etcd := gateway(false), gateway(true)
	var usage []etcdWindow
	for round := range rounds {
		bolt.window(b, "bolt/jwt", round)
		before := etcdUsageOf(b, etcd.etcd)
		etcd.window(b, "etcd/jwt", round)
		usage = append(usage, etcdUsageOf(b, etcd.etcd).since(before, etcd.windows[round], etcd.keys, members))
	}
	bolt.stop()
	etcd.stop()

	ratios := make([]float64, rounds)
	for i := range rounds {
		ratios[i] = etcd.windows[i].keysPerSec / bolt.windows[i].keysPerSec
	}
	slices.Sort(ratios)
	ratio := ratios[rounds/2]
	bw, ew, eu := medianWindow(bolt.windows), medianWindow(etcd.windows), medianEtcdWindow(usage)
	var out strings.Builder
	fmt.Fprintf(&out, "\n| Store | keys/s | gateway CPU µs/key | etcd CPU µs/key (all members) | WAL fsyncs/s (all members) | backend commits/s | keys per WAL fsync of a member |\n|---|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&out, "| bbolt | %.0f | %.0f | | | | |\n", bw.keysPerSec, bw.cpuPerKeyUs)
	fmt.Fprintf(&out, "| etcd, %d members | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f |\n", members, ew.keysPerSec, ew.cpuPerKeyUs, eu.cpuPerKeyUs, eu.fsyncsPerSec, eu.commitsPerSec, eu.keysPerFsync)
	fmt.Fprintf(&out, "\netcd / bbolt keys/s, median of %d rounds: %.2f (rounds: %.2f)\n", rounds, ratio, ratios)
	b.Log(out.String())
	b.ReportMetric(ratio, "etcd/bolt")
	b.ReportMetric(ew.keysPerSec, "etcd-keys/s")
	b.ReportMetric(bw.keysPerSec, "bolt-keys/s")
}

// etcdCounters are what a cluster's members did so far.
type etcdCounters struct {
	cpuTicks        int64   // user and system time, 1/100 s
	fsyncs, commits float64 // WAL fsyncs and backend commits
}

// etcdUsageOf sums the counters of c's members.
func etcdUsageOf(b *testing.B, c *etcdtest.Cluster) (u etcdCounters) {
	for _, m := range c.Members {
		u.cpuTicks += cpuTicks(b, m.Pid())
		u.fsyncs += metricValue(b, m.ClientURL+"/metrics", "etcd_disk_wal_fsync_duration_seconds_count")
		u.commits += metricValue(b, m.ClientURL+"/metrics", "etcd_disk_backend_commit_duration_seconds_count")
	}
	return u
}

// An etcdWindow is what the cluster did during one mint window.
type etcdWindow struct {
	cpuPerKeyUs, fsyncsPerSec, commitsPerSec, keysPerFsync float64
}

// since is the usage of a cluster of members from before to u over window
// w, which ended with the store holding keysAfter keys.
func (u etcdCounters) since(before etcdCounters, w mintWindow, keysAfter float64, members int) etcdWindow {
	keys := keysAfter - w.size
	seconds := keys / w.keysPerSec
	fsyncs := u.fsyncs - before.fsyncs
	return etcdWindow{
		cpuPerKeyUs:   float64(u.cpuTicks-before.cpuTicks) * 1e4 / keys,
		fsyncsPerSec:  fsyncs / seconds,
		commitsPerSec: (u.commits - before.commits) / seconds,
		keysPerFsync:  keys * float64(members) / fsyncs,
	}
}

// medianEtcdWindow is the median of each measure of ws.
func medianEtcdWindow(ws []etcdWindow) etcdWindow {
	median := func(f func(etcdWindow) float64) float64 {
		v := slices.SortedFunc(slices.Values(ws), func(a, b etcdWindow) int { return cmp.Compare(f(a), f(b)) })
		return f(v[len(v)/2])
	}
	return etcdWindow{
		cpuPerKeyUs:   median(func(w etcdWindow) float64 { return w.cpuPerKeyUs }),
		fsyncsPerSec:  median(func(w etcdWindow) float64 { return w.fsyncsPerSec }),
		commitsPerSec: median(func(w etcdWindow) float64 { return w.commitsPerSec }),
		keysPerFsync:  median(func(w etcdWindow) float64 { return w.keysPerFsync }),
	}
}
