package integration

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// BenchmarkMintCurve mints keys the way a user's load generator would:
// wrk, 64 connections over loopback, sharing the machine's cores with the
// gateway binary, posting create_api_key until the store holds
// APIKEYS_MINT_KEYS keys (default 10⁶), in windows of 3 s. For each
// window it records the store's size, keys/s (from the gateway's
// keys_minted_total) and the gateway's CPU time per key (from
// /proc/<pid>/stat), and reports the median of five windows from 0,
// 10⁵, 2.5·10⁵ and 5·10⁵ keys on, and of the last five. Setups (APIKEYS_MINT_SETUPS, default all four):
// bolt/jwt, bolt/password, etcd/jwt, etcd/password; jwt posts one HS256
// token, password a configured user's username and password (whose
// check is cached after the first). The audit log is on, to a file.
//
//	bench/mint-curve.sh   (or: go test ./integration -run '^$' -bench MintCurve -benchtime 1x -timeout 60m -v)
func BenchmarkMintCurve(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Skip("needs wrk (bench/run.sh installs it)")
	}
	total := envInt(b, "APIKEYS_MINT_KEYS", 1_000_000)
	setups := strings.Split(envString("APIKEYS_MINT_SETUPS", "bolt/jwt,bolt/password,etcd/jwt,etcd/password"), ",")
	hash, err := bcrypt.GenerateFromPassword([]byte("alicepw"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "minter", "aud": "bench", "exp": time.Now().Add(24 * time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	if err != nil {
		b.Fatal(err)
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n| Setup | keys in store | keys/s | CPU µs/key |\n|---|---:|---:|---:|\n")
	for _, setup := range setups {
		store, cred, _ := strings.Cut(setup, "/")
		dir := b.TempDir()
		storeLine := "store bolt " + filepath.Join(dir, "keys.db")
		if store == "etcd" {
			c := etcdtest.Start(b, 1)
			storeLine = "store etcd " + c.Endpoints()[0] + " {\n\t\t\tprefix /mint/\n\t\t}"
		}
		ports := holdPorts(b, 2)
		addr, admin := ports[0].Addr, ports[1].Addr
		cfg := fmt.Sprintf(`{
	%s
	log default {
		output file %s
	}
	apikeys {
		%s
		user alice %s
		jwt {
			secret %s
			audience bench
		}
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
}
`, adminOption(ports[1], 4), filepath.Join(dir, "caddy.log"), storeLine, hash, jwtSecret, addr)
		config := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		rc := startBinary(b, config, dir, ports)
		body := fmt.Sprintf(`{"auth": %q, "title": "bench"}`, token)
		if cred == "password" {
			body = `{"auth": {"username": "alice", "password": "alicepw"}, "title": "bench"}`
		}
		script := filepath.Join(dir, "mint.lua")
		lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", body)
		if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
			b.Fatal(err)
		}
		// One request first: a password's check is then cached, as it is
		// for any client that signs in more than once.
		if r := post(b, "http://"+addr+"/api/create_api_key", body); r.status != 200 {
			b.Fatalf("%s: first mint: %d %s", setup, r.status, r.body)
		}
		minted := func() float64 {
			return metricValue(b, "http://"+admin+"/metrics", "caddy_apikeys_keys_minted_total")
		}
		type window struct {
			size        float64
			keysPerSec  float64
			cpuPerKeyUs float64
		}
		var windows []window
		size := minted()
		for size < float64(total) {
			cpu0, t0 := cpuTicks(b, rc.cmd.Process.Pid), time.Now()
			out, err := exec.Command("wrk", "-t2", "-c64", "-d3s", "--timeout", "5s", "-s", script, "http://"+addr+"/api/create_api_key").CombinedOutput()
			if err != nil {
				b.Fatalf("wrk: %v\n%s", err, out)
			}
			if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindSubmatch(out); m != nil {
				b.Fatalf("%s: %s refused mints at %.0f keys:\n%s", setup, m[1], size, out)
			}
			elapsed, cpu := time.Since(t0), cpuTicks(b, rc.cmd.Process.Pid)-cpu0
			now := minted()
			keys := now - size
			windows = append(windows, window{size, keys / elapsed.Seconds(), float64(cpu) * 1e4 / keys})
			size = now
		}
		rc.stop()
		if store == "bolt" { // opening the grown file, as a restart does
			start := time.Now()
			st, err := keystore.OpenBolt(filepath.Join(dir, "keys.db"), time.Second)
			if err != nil {
				b.Fatal(err)
			}
			opened := time.Since(start)
			_ = st.Close()
			fmt.Fprintf(&report, "| %s: opening the file at %.0f keys | | %v | |\n", setup, size, opened.Round(time.Microsecond))
		}
		// Each row is the median of five consecutive windows from that
		// size on (the last row: the last five), as one 3 s window is noisy.
		median := func(ws []window) window {
			byRate := slices.Clone(ws)
			slices.SortFunc(byRate, func(a, b window) int { return cmp.Compare(a.keysPerSec, b.keysPerSec) })
			byCPU := slices.Clone(ws)
			slices.SortFunc(byCPU, func(a, b window) int { return cmp.Compare(a.cpuPerKeyUs, b.cpuPerKeyUs) })
			return window{ws[len(ws)/2].size, byRate[len(ws)/2].keysPerSec, byCPU[len(ws)/2].cpuPerKeyUs}
		}
		var rows []window
		for _, at := range []float64{0, 100_000, 250_000, 500_000, float64(total)} {
			i := slices.IndexFunc(windows, func(w window) bool { return w.size >= at })
			if i < 0 || at == float64(total) {
				i = len(windows) - 5
			}
			i = max(0, min(i, len(windows)-5))
			rows = append(rows, median(windows[i:min(i+5, len(windows))]))
		}
		for _, w := range rows {
			fmt.Fprintf(&report, "| %s | %.0f | %.0f | %.0f |\n", setup, w.size, w.keysPerSec, w.cpuPerKeyUs)
		}
		first, last := rows[0], rows[len(rows)-1]
		b.ReportMetric(first.keysPerSec, setupMetric(setup, "first-keys/s"))
		b.ReportMetric(last.keysPerSec, setupMetric(setup, "last-keys/s"))
	}
	b.Log(report.String())
}

func setupMetric(setup, unit string) string { return strings.ReplaceAll(setup, "/", "-") + "-" + unit }

// cpuTicks is the user and system time of process pid, in clock ticks
// (1/100 s).
func cpuTicks(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start at ")".
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
