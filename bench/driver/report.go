package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func hs256(secret, sub string) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func field(ss []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return median(xs)
}

// row is a setup's medians and its ratios to the route without a key check.
type row struct {
	name                    string
	rps, p50, p99, cpu      float64
	rpsRatio, cpuEfficiency float64
}

func (r *run) rows() []row {
	base := r.results[r.order[0]]
	var out []row
	for _, name := range r.order {
		ss := r.results[name]
		rw := row{
			name: name,
			rps:  field(ss, func(s sample) float64 { return s.rps }),
			p50:  field(ss, func(s sample) float64 { return s.p50 }),
			p99:  field(ss, func(s sample) float64 { return s.p99 }),
			cpu:  field(ss, func(s sample) float64 { return s.cpuMicros }),
		}
		// Ratios are taken within each round, where both setups ran
		// minutes apart at most, and then their median: the machine's
		// drift between rounds cancels out.
		var rpsRatios, cpuRatios []float64
		for i := range min(len(ss), len(base)) {
			rpsRatios = append(rpsRatios, ss[i].rps/base[i].rps)
			cpuRatios = append(cpuRatios, base[i].cpuMicros/ss[i].cpuMicros)
		}
		rw.rpsRatio, rw.cpuEfficiency = median(rpsRatios), median(cpuRatios)
		out = append(out, rw)
	}
	return out
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s %s/%s", model, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func (r *run) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# caddy-apikeys benchmark\n\n%s. Machine: %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	placement := "wrk, the upstream and the servers share the cores"
	threads := 2
	if r.pin {
		placement = "the measured server is pinned to CPU 0 (so Go runs it with GOMAXPROCS=1), wrk and the upstream nginx to CPU 1"
		threads = 1
	}
	fmt.Fprintf(&b, "Proxied GET on loopback, `wrk -t%d -c%d`; %s; %s per run, setups alternated over %d rounds; medians. "+
		"CPU is the serving process's user+system time per request (from /proc/<pid>/stat). "+
		"The ratios compare each setup with the no-key-check route of the same round, then take the median over rounds: "+
		"\"req/s ratio\" is the setup's throughput over the route's, \"CPU efficiency\" the route's CPU per request over the setup's "+
		"(1.00 = no extra cost).\n\n",
		threads, r.connections, placement, r.duration, r.rounds)
	b.WriteString("| Setup | req/s | p50 ms | p99 ms | CPU µs/req | req/s ratio | CPU efficiency |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, rw := range r.rows() {
		fmt.Fprintf(&b, "| %s | %.0f | %.3f | %.3f | %.1f | %.3f | %.3f |\n", rw.name, rw.rps, rw.p50, rw.p99, rw.cpu, rw.rpsRatio, rw.cpuEfficiency)
	}
	if len(r.mint) > 0 {
		fmt.Fprintf(&b, "\n**Minting**: HS256-JWT-authenticated `POST /api/create_api_key`, 64 connections, each key committed to bbolt before its response: "+
			"**%.0f keys/s** (median of %d runs; p50 %.2f ms, p99 %.2f ms).\n",
			field(r.mint, func(s sample) float64 { return s.rps }), len(r.mint),
			field(r.mint, func(s sample) float64 { return s.p50 }), field(r.mint, func(s sample) float64 { return s.p99 }))
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if r.goBench != "" {
		b.WriteString("\nGo benchmarks (`go test ./caddymodule ./keystore -bench … -benchmem`):\n\n```\n")
		for _, line := range strings.Split(r.goBench, "\n") {
			if strings.HasPrefix(line, "Benchmark") {
				b.WriteString(line + "\n")
			}
		}
		b.WriteString("```\n")
	}
	return b.String()
}

// chart draws the two ratios of each setup as horizontal bars.
func (r *run) chart() string {
	rows := r.rows()
	const left, width, barH, gap = 210, 420, 14, 10
	height := 60 + len(rows)*(2*barH+gap) + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+80, height)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">Cost of the key check, relative to the same route without it (1.0 = free)</text>`+"\n")
	fmt.Fprintf(&b, `<rect x="%d" y="32" width="12" height="10" fill="#4c78a8"/><text x="%d" y="41">req/s ratio</text>`, left, left+16)
	fmt.Fprintf(&b, `<rect x="%d" y="32" width="12" height="10" fill="#f58518"/><text x="%d" y="41">CPU efficiency</text>`+"\n", left+110, left+126)
	scale := func(v float64) float64 { return min(v, 1.5) / 1.5 * width }
	y := 55
	for _, rw := range rows {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+barH+4, rw.name)
		for i, v := range []float64{rw.rpsRatio, rw.cpuEfficiency} {
			color := []string{"#4c78a8", "#f58518"}[i]
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/><text x="%.1f" y="%d">%.3f</text>`+"\n",
				left, y+i*barH, scale(v), barH-2, color, float64(left)+scale(v)+4, y+i*barH+barH-3, v)
		}
		y += 2*barH + gap
	}
	one := float64(left) + scale(1)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="50" x2="%.1f" y2="%d" stroke="#333" stroke-dasharray="4 3"/><text x="%.1f" y="%d" text-anchor="middle">1.0</text>`+"\n",
		one, one, y, one, y+14)
	b.WriteString("</svg>\n")
	return b.String()
}
