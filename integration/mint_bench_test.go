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

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// BenchmarkMintCurve mints keys the way a user's load generator would:
// wrk, 64 connections over loopback, sharing the machine's cores with the
// gateway binary, posting create_api_key until the store holds
// APIKEYS_MINT_KEYS keys (default 10⁶), in windows of 3 s. For each
// window it records the store's size, keys/s (from the gateway's
// keys_minted_total) and the gateway's CPU time per key (from
// /proc/<pid>/stat), and reports the median of five windows from 0,
// 10⁵, 2.5·10⁵ and 5·10⁵ keys on, and of the last five. Setups
// (APIKEYS_MINT_SETUPS, default all four): bolt/jwt, bolt/password,
// etcd/jwt, etcd/password; jwt posts one HS256 token, password a
// configured user's username and password (whose check is cached after
// the first); etcd runs APIKEYS_MINT_MEMBERS members (default 1). The
// audit log is on, to a file.
//
// This machine's speed drifts by more than the size effect sought, so
// every round of windows also mints through a second gateway of the same
// build whose store starts over whenever it passes 10⁵ keys (etcd: a new
// member), and each row sets the growing store's keys/s against that
// empty store's in the same rounds. With APIKEYS_MINT_BASELINE naming
// another build's binary (bench/mint-curve.sh builds the revision before
// minting was tuned), a third gateway of that build mints into a store
// kept at the same size as the first, and each row sets CPU per key
// against it.
//
//	bench/mint-curve.sh   (or: go test ./integration -run '^$' -bench MintCurve -benchtime 1x -timeout 90m -v)
func BenchmarkMintCurve(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Skip("needs wrk (bench/run.sh installs it)")
	}
	total := float64(testutil.EnvInt(b, "APIKEYS_MINT_KEYS", 1_000_000))
	setups := strings.Split(envString("APIKEYS_MINT_SETUPS", "bolt/jwt,bolt/password,etcd/jwt,etcd/password"), ",")
	baseline := os.Getenv("APIKEYS_MINT_BASELINE")
	baselineName := envString("APIKEYS_MINT_BASELINE_NAME", "baseline")
	members := testutil.EnvInt(b, "APIKEYS_MINT_MEMBERS", 1)
	hash, token := mintCredentials(b, bcrypt.DefaultCost)
	for _, setup := range setups {
		mintCurve(b, setup, total, hash, token, baseline, baselineName, members)
	}
}

// mintCurve runs BenchmarkMintCurve for one setup and logs its tables.
func mintCurve(b *testing.B, setup string, total float64, hash []byte, token, baseline, baselineName string, members int) {
	var curve, against strings.Builder
	fmt.Fprintf(&curve, "\n| Setup | keys in store | keys/s | CPU µs/key | empty store, same rounds: keys/s | CPU µs/key | keys/s, grown / empty |\n|---|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&against, "\n| Setup | keys in store | keys/s | %[1]s: keys/s | CPU µs/key | %[1]s: CPU µs/key | CPU, this build / %[1]s |\n|---|---:|---:|---:|---:|---:|---:|\n", baselineName)
	storeKind, cred, _ := strings.Cut(setup, "/")
	body, script := mintScript(b, cred, token)
	gateway := func(binary string) *mintGateway {
		g := &mintGateway{binary: binary, dir: b.TempDir(), ports: holdPorts(b, 2), hash: string(hash), body: body, script: script, members: members}
		if storeKind == "etcd" {
			g.newEtcd = true
		}
		g.start(b, setup)
		return g
	}
	grown, empty := gateway(caddyBinary(b)), gateway(caddyBinary(b))
	var base *mintGateway
	if baseline != "" {
		base = gateway(baseline)
		base.earlier = true
	}
	for round := 0; grown.keys < total; round++ {
		grown.window(b, setup, round)
		empty.window(b, setup, round)
		if empty.keys > emptyStoreUpTo {
			empty.stop()
			empty.start(b, setup)
		}
		for base != nil && base.keys < grown.keys {
			base.window(b, setup, round)
		}
	}
	for _, g := range []*mintGateway{grown, empty, base} {
		if g != nil {
			g.stop()
		}
	}
	if storeKind == "bolt" { // opening the grown file, as a restart does
		start := time.Now()
		st, err := boltstore.Open(filepath.Join(grown.dir, "keys.db"), time.Second)
		if err != nil {
			b.Fatal(err)
		}
		opened := time.Since(start)
		_ = st.Close()
		fmt.Fprintf(&curve, "| %s: opening the file at %.0f keys | | %v | | | | |\n", setup, grown.keys, opened.Round(time.Microsecond))
	}
	var last, vsBase float64
	for _, at := range []float64{0, 100_000, 250_000, 500_000, total} {
		rows := grown.from(at, total)
		row := medianWindow(rows)
		ref := medianWindow(empty.inRounds(rows[0].round, rows[len(rows)-1].round))
		last = row.keysPerSec / ref.keysPerSec
		fmt.Fprintf(&curve, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f |\n", setup, row.size, row.keysPerSec, row.cpuPerKeyUs, ref.keysPerSec, ref.cpuPerKeyUs, last)
		if base != nil {
			old := medianWindow(base.from(at, total))
			vsBase = row.cpuPerKeyUs / old.cpuPerKeyUs
			fmt.Fprintf(&against, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f |\n", setup, row.size, row.keysPerSec, old.keysPerSec, row.cpuPerKeyUs, old.cpuPerKeyUs, vsBase)
		}
	}
	b.ReportMetric(last, setupMetric(setup, "last-grown/empty-keys/s"))
	if base != nil {
		b.ReportMetric(vsBase, setupMetric(setup, "last-cpu/baseline"))
		fmt.Fprintf(&against, "\n%s refused %d of its mints (minted %.0f)\n", baselineName, base.refused, base.keys)
	}
	if baseline == "" {
		against.Reset()
	}
	b.Log(curve.String() + against.String())
}

// mintCredentials returns alice's bcrypt hash, of the given cost, and an
// HS256 token for the benchmarks' JWT configuration.
func mintCredentials(b *testing.B, cost int) (hash []byte, token string) {
	hash, err := bcrypt.GenerateFromPassword([]byte("alicepw"), cost)
	if err != nil {
		b.Fatal(err)
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "minter", "aud": "bench", "exp": time.Now().Add(24 * time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	if err != nil {
		b.Fatal(err)
	}
	return hash, token
}

// mintScript returns the create_api_key body for cred (jwt: token; or
// password) and a wrk script that posts it.
func mintScript(b *testing.B, cred, token string) (body, script string) {
	body = fmt.Sprintf(`{"auth": %q, "title": "bench"}`, token)
	if cred == "password" {
		body = `{"auth": {"username": "alice", "password": "alicepw"}, "title": "bench"}`
	}
	script = filepath.Join(b.TempDir(), "mint.lua")
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", body)
	if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
		b.Fatal(err)
	}
	return body, script
}

// emptyStoreUpTo is the size past which the reference gateway's store
// starts over.
const emptyStoreUpTo = 100_000

// A mintWindow is one wrk run against one gateway.
type mintWindow struct {
	round       int     // the round of windows it was taken in
	size        float64 // keys in the store at its start
	keysPerSec  float64
	cpuPerKeyUs float64
}

// medianWindow is the median keys/s and the median CPU per key of ws, at
// the first one's size.
func medianWindow(ws []mintWindow) mintWindow {
	byRate := slices.Clone(ws)
	slices.SortFunc(byRate, func(a, b mintWindow) int { return cmp.Compare(a.keysPerSec, b.keysPerSec) })
	byCPU := slices.Clone(ws)
	slices.SortFunc(byCPU, func(a, b mintWindow) int { return cmp.Compare(a.cpuPerKeyUs, b.cpuPerKeyUs) })
	return mintWindow{ws[0].round, ws[0].size, byRate[len(ws)/2].keysPerSec, byCPU[len(ws)/2].cpuPerKeyUs}
}

// A mintGateway is one gateway binary of the curve, with its own store
// (bbolt in its directory, or its own etcd member), listening on ports[0]
// with its admin API on ports[1].
type mintGateway struct {
	binary, dir  string
	ports        []heldPort
	hash         string // alice's bcrypt hash
	body, script string // the request wrk posts, and its script
	newEtcd      bool   // an etcd store, on a cluster of its own
	members      int    // of that cluster; 0 is one
	etcd         *etcdtest.Cluster
	rc           *runningCaddy
	keys         float64 // in its store
	windows      []mintWindow
	// earlier is an earlier build, whose refusals (such as a lockout
	// under concurrent sign-ins) are counted, not fatal: keys/s counts
	// the keys it minted.
	earlier bool
	refused int
}

// start runs the gateway on an empty store, mints once (a password's
// check is then cached, as it is for any client that signs in more than
// once) and warms it up for a second, uncounted.
func (g *mintGateway) start(b *testing.B, setup string) {
	storeLine := "store bolt " + filepath.Join(g.dir, "keys.db")
	if g.newEtcd {
		if g.etcd != nil {
			for _, m := range g.etcd.Members {
				m.Stop()
			}
		}
		g.etcd = etcdtest.Start(b, max(g.members, 1))
		storeLine = "store etcd " + strings.Join(g.etcd.Endpoints(), " ") + " {\n\t\t\tprefix /mint/\n\t\t}"
	} else if err := os.Remove(filepath.Join(g.dir, "keys.db")); err != nil && !os.IsNotExist(err) {
		b.Fatal(err)
	}
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
`, adminOption(g.ports[1], 4), filepath.Join(g.dir, "caddy.log"), storeLine, g.hash, jwtSecret, g.ports[0].Addr)
	config := filepath.Join(g.dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	g.rc = startBinaryAt(b, g.binary, config, g.dir, g.ports)
	if r := post(b, g.url(), g.body); r.status != 200 {
		b.Fatalf("%s: first mint: %d %s", setup, r.status, r.body)
	}
	g.wrk(b, setup, time.Second)
	g.keys = g.minted(b)
}

func (g *mintGateway) stop() { g.rc.Stop() }

func (g *mintGateway) url() string { return "http://" + g.ports[0].Addr + "/api/create_api_key" }

// minted is the number of keys the running gateway has minted, all of
// them into its store, which it started with empty.
func (g *mintGateway) minted(b *testing.B) float64 {
	return metricValue(b, "http://"+g.ports[1].Addr+"/metrics", "caddy_apikeys_keys_minted_total")
}

// window mints for 3 s and records keys/s and CPU per key.
func (g *mintGateway) window(b *testing.B, setup string, round int) {
	pid := g.rc.Cmd.Process.Pid
	cpu0, t0 := cpuTicks(b, pid), time.Now()
	g.wrk(b, setup, 3*time.Second)
	elapsed, cpu := time.Since(t0), cpuTicks(b, pid)-cpu0
	now := g.minted(b)
	keys := now - g.keys
	g.windows = append(g.windows, mintWindow{round, g.keys, keys / elapsed.Seconds(), float64(cpu) * 1e4 / keys})
	g.keys = now
}

func (g *mintGateway) wrk(b *testing.B, setup string, d time.Duration) {
	out, err := exec.Command("wrk", "-t2", "-c64", "-d"+d.String(), "--timeout", "5s", "-s", g.script, g.url()).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindSubmatch(out); m != nil {
		if !g.earlier {
			b.Fatalf("%s: %s refused mints at %.0f keys:\n%s", setup, m[1], g.keys, out)
		}
		n, _ := strconv.Atoi(string(m[1]))
		g.refused += n
	}
}

// from returns five consecutive windows, the first taken at size at or
// beyond (the last five, for the last size).
func (g *mintGateway) from(at, last float64) []mintWindow {
	i := slices.IndexFunc(g.windows, func(w mintWindow) bool { return w.size >= at })
	if i < 0 || at >= last {
		i = len(g.windows) - 5
	}
	i = max(0, min(i, len(g.windows)-5))
	return g.windows[i:min(i+5, len(g.windows))]
}

// inRounds returns the windows taken in rounds first to last.
func (g *mintGateway) inRounds(first, last int) []mintWindow {
	var out []mintWindow
	for _, w := range g.windows {
		if w.round >= first && w.round <= last {
			out = append(out, w)
		}
	}
	return out
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
