// Command loadkeys fills a bbolt key store through the keystore API, for
// benchmarks: it mints -n keys for -owners users with 256 concurrent
// callers, writes a few of the minted keys to -out, and reports the time
// taken, the file size per key and the time to open the file again.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func main() {
	db := flag.String("db", "", "bbolt file to fill (created if missing)")
	n := flag.Int("n", 1000, "number of keys to mint")
	owners := flag.Int("owners", 1000, "number of distinct owners")
	out := flag.String("out", "", "file to write sample keys to, one per line")
	samples := flag.Int("samples", 16, "number of sample keys to write")
	flag.Parse()
	if *db == "" || *n <= 0 {
		log.Fatal("usage: loadkeys -db <file> -n <count> [-owners <count>] [-out <file>]")
	}

	s, err := boltstore.Open(*db, 5*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	kr := keystore.NewKeyring(s, keystore.Options{})
	var next atomic.Int64
	var mu sync.Mutex
	var kept []string
	start := time.Now()
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(*n) {
					return
				}
				m, err := kr.Mint(context.Background(), keystore.Actor{Owner: keystore.Service(fmt.Sprintf("user%d", i%int64(*owners))), Operator: true}, keystore.KeyRequest{Title: "bench"})
				if err != nil {
					log.Fatal(err)
				}
				if i%(int64(*n)/int64(*samples)+1) == 0 {
					mu.Lock()
					kept = append(kept, m.Secret)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := kr.Close(); err != nil {
		log.Fatal(err)
	}
	if err := s.Close(); err != nil {
		log.Fatal(err)
	}

	fi, err := os.Stat(*db)
	if err != nil {
		log.Fatal(err)
	}
	openStart := time.Now()
	s, err = boltstore.Open(*db, 5*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	openTime := time.Since(openStart)
	_ = s.Close()

	if *out != "" {
		if err := os.WriteFile(*out, []byte(strings.Join(kept, "\n")+"\n"), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("keys=%d mint_seconds=%.2f keys_per_second=%.0f file_bytes=%d bytes_per_key=%.1f open_ms=%.2f\n",
		*n, elapsed.Seconds(), float64(*n)/elapsed.Seconds(), fi.Size(), float64(fi.Size())/float64(*n),
		float64(openTime.Microseconds())/1000)
}
