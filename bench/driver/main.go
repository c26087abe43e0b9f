// Command driver runs the gateway benchmark that bench/run.sh starts: it
// loads key stores through the keystore API, starts the gateway (twice:
// with 10^3 and with 10^6 keys) and nginx on loopback, measures each setup
// with wrk in alternating rounds, and writes a Markdown report and an SVG
// chart of the ratios. Every run is bounded in time and every server is
// stopped at the end.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

type config struct {
	caddy, loadkeys, wrk, nginx string
	duration                    time.Duration
	rounds                      int
	connections                 int
	bigKeys                     int
	outDir, repoRoot            string
	pin                         bool
}

func main() {
	var c config
	flag.StringVar(&c.caddy, "caddy", "", "gateway binary")
	flag.StringVar(&c.loadkeys, "loadkeys", "", "loadkeys binary")
	flag.StringVar(&c.wrk, "wrk", "wrk", "wrk binary")
	flag.StringVar(&c.nginx, "nginx", "nginx", "nginx binary (empty to skip the nginx row)")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "length of one wrk run")
	flag.IntVar(&c.rounds, "rounds", 5, "alternating rounds per setup")
	flag.IntVar(&c.connections, "connections", 32, "wrk connections for the proxy runs")
	flag.IntVar(&c.bigKeys, "big", 1_000_000, "keys in the large store")
	flag.StringVar(&c.outDir, "out", "bench/results", "where to write the report")
	flag.StringVar(&c.repoRoot, "repo", ".", "repository root, for the Go benchmarks")
	flag.BoolVar(&c.pin, "pin", runtime.NumCPU() >= 2, "run servers on CPU 0 and load and upstream on CPU 1 (taskset)")
	flag.Parse()
	if c.caddy == "" || c.loadkeys == "" {
		log.Fatal("-caddy and -loadkeys are required")
	}
	log.SetFlags(log.Ltime)
	work, err := os.MkdirTemp("", "apikeys-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	r := &run{config: c, work: work}
	defer r.stopAll()
	if err := r.main(); err != nil {
		r.stopAll()
		log.Fatal(err)
	}
	if err := os.MkdirAll(c.outDir, 0o755); err != nil {
		log.Fatal(err)
	}
	md := r.report()
	fmt.Println(md)
	stamp := time.Now().UTC().Format("20060102-150405")
	for _, name := range []string{"results-" + stamp + ".md", "latest.md"} {
		if err := os.WriteFile(filepath.Join(c.outDir, name), []byte(md), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(c.outDir, "ratios.svg"), []byte(r.chart()), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("report written to %s/latest.md, chart to %s/ratios.svg", c.outDir, c.outDir)
}
