package etcdstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// BenchmarkVerifyCached is a key check answered from the gateway's cache,
// the path of nearly every request: no etcd round trip.
func BenchmarkVerifyCached(b *testing.B) {
	c := etcdtest.Start(b, 1)
	s := openBenchStore(b, c)
	ops := new(storeOps)
	kr := keystore.NewKeyring(s, keystore.Options{FlushInterval: time.Hour, Observer: ops.observe})
	defer kr.Close()
	ctx := context.Background()
	m, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		b.Fatal(err)
	}
	// Wait until the watch has reported the creation and caught up, and
	// the key is cached: a verification reads nothing from etcd.
	testutil.Eventually(b, 10*time.Second, "the key verified from the cache", func() bool { return verifiedFromCache(kr, ops, m.Secret) })
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeyByHash is a cache miss: one linearizable etcd read.
func BenchmarkKeyByHash(b *testing.B) {
	c := etcdtest.Start(b, 1)
	s := openBenchStore(b, c)
	k := storeKey(b, s)
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.KeyByHash(ctx, k.Hash, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateKey is one mint: one etcd transaction, committed by the
// cluster before it returns.
func BenchmarkCreateKey(b *testing.B) {
	c := etcdtest.Start(b, 1)
	s := openBenchStore(b, c)
	for b.Loop() {
		storeKey(b, s)
	}
}

func openBenchStore(b *testing.B, c *etcdtest.Cluster) *Store {
	b.Helper()
	s, err := Open(clientConfig(c), Options{Prefix: "/bench/"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkCreateKeyParallel mints from 64 goroutines at once, as a busy
// gateway does, on one member and on three: concurrent mints share group
// commits (commit.go).
func BenchmarkCreateKeyParallel(b *testing.B) {
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			c := etcdtest.Start(b, members)
			s := openBenchStore(b, c)
			b.SetParallelism(32) // × GOMAXPROCS (2 here) = 64 clients
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					storeKey(b, s)
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
		})
	}
}
