package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// hardenedConfig writes a Caddyfile for the real binary: the apikeys app
// on db, the endpoints and a protected /v1/ on ports[0] (fd/3) answering
// with the caller's id and the URI it was given, admin on ports[1] (fd/4).
// extraGlobal goes into the global options, extraApp into the apikeys
// block.
func hardenedConfig(t *testing.T, dir, db string, ports []heldPort, extraGlobal, extraApp string) string {
	t.Helper()
	return hardenedConfigHash(t, dir, db, ports, extraGlobal, extraApp, bcryptHash(t, "alicepw"))
}

// hardenedConfigHash is hardenedConfig with alice's password hash given.
func hardenedConfigHash(t *testing.T, dir, db string, ports []heldPort, extraGlobal, extraApp, aliceHash string) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("Caddyfile-%d", time.Now().UnixNano()))
	cfg := fmt.Sprintf(`{
	%s
	%s
	apikeys {
		store bolt %s {
			open_timeout 1s
		}
		user alice %s
		jwt {
			secret {env.APIKEYS_TEST_JWT_SECRET}
			accept_any_audience
		}
		last_used_flush_interval 200ms
		%s
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/* {
		header X-Api-Key
		query api_key
		body
	}
	respond /v1/* "user={http.auth.user.id} uri={http.request.uri}"
	respond /plain "ok"
}
`, adminOption(ports[1], 4), extraGlobal, db, aliceHash, extraApp, ports[0].Addr)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type hardenedGateway struct {
	*runningCaddy
	dir, db, admin, base, config string
	ports                        []heldPort
}

func startHardened(t *testing.T, extraGlobal, extraApp string) *hardenedGateway {
	t.Helper()
	return startHardenedHash(t, extraGlobal, extraApp, bcryptHash(t, "alicepw"))
}

// startHardenedHash is startHardened with alice's password hash given.
func startHardenedHash(t *testing.T, extraGlobal, extraApp, aliceHash string) *hardenedGateway {
	t.Helper()
	dir := t.TempDir()
	ports := holdPorts(t, 2)
	g := &hardenedGateway{dir: dir, db: filepath.Join(dir, "keys.db"), ports: ports,
		base: "http://" + ports[0].Addr, admin: ports[1].Addr}
	g.config = hardenedConfigHash(t, dir, g.db, ports, extraGlobal, extraApp, aliceHash)
	g.runningCaddy = startBinary(t, g.config, dir, ports)
	return g
}

func (g *hardenedGateway) mint(t *testing.T, auth string) createdKey {
	t.Helper()
	return decodeCreated(t, post(t, g.base+"/api/create_api_key", `{"auth": `+auth+`}`))
}

func (g *hardenedGateway) works(t *testing.T, headers ...string) bool {
	t.Helper()
	return do(t, http.MethodGet, g.base+"/v1/x", "", headers...).status == 200
}

// TestSecretsNeverLogged runs every credential kind through every
// endpoint with Caddy's access log and all logs at DEBUG, and looks for
// the secrets in everything the process printed.
func TestSecretsNeverLogged(t *testing.T) {
	g := startHardened(t, "log {\n\t\tlevel DEBUG\n\t}\n\tdebug", "")
	// The site's access log, with the filter the docs give for keys
	// in a custom header or a query parameter: Caddy logs the request as
	// it arrived, and redacts only its own credential headers.
	const accessLog = "\tlog {\n\t\tformat filter {\n\t\t\trequest>headers>X-Api-Key delete\n\t\t\trequest>uri query {\n\t\t\t\tdelete api_key\n\t\t\t}\n\t\t}\n\t}\n"
	cfg, _ := os.ReadFile(g.config)
	_ = os.WriteFile(g.config, []byte(strings.Replace(string(cfg), "\tapikeys_api /api/*", accessLog+"\tapikeys_api /api/*", 1)), 0o600)
	loadConfig(t, g.admin, string(mustRead(t, g.config)))

	token, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "tokenuser", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	secrets := []string{"alicepw", "wrong-password-123", token, jwtSecret}
	var keys []createdKey
	keys = append(keys, g.mint(t, `{"username": "alice", "password": "alicepw"}`))
	keys = append(keys, g.mint(t, `"`+token+`"`))
	keys = append(keys, decodeCreated(t, post(t, g.base+"/api/create_api_key", "", "Authorization", "Basic YWxpY2U6YWxpY2Vwdw==")))
	keys = append(keys, decodeCreated(t, post(t, g.base+"/api/create_api_key", `{"title": "t"}`, "Authorization", "Bearer "+token)))
	post(t, g.base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "wrong-password-123"}}`)
	post(t, g.base+"/api/create_api_key", `{"auth": {"api_key": "`+keys[0].APIKey+`"}}`)
	post(t, g.base+"/api/fetch_api_keys", `{"auth": "`+token+`"}`)
	rotated := decodeCreated(t, post(t, g.base+"/api/rotate_api_key", `{"auth": {"username": "alice", "password": "alicepw"}, "api_key_id": "`+keys[2].ID+`", "grace_seconds": 60}`))
	keys = append(keys, rotated)
	metrics := "http://" + g.admin + "/metrics"
	const flushes = `caddy_apikeys_store_operation_duration_seconds_count{operation="touch_keys"}`
	flushed := metricValue(t, metrics, flushes)
	for i, k := range keys {
		switch i % 4 {
		case 0:
			g.works(t, "Authorization", "Bearer "+k.APIKey)
		case 1:
			g.works(t, "X-Api-Key", k.APIKey)
		case 2:
			do(t, http.MethodGet, g.base+"/v1/x?api_key="+k.APIKey, "")
		case 3:
			do(t, http.MethodPost, g.base+"/v1/x", `{"auth": {"api_key": "`+k.APIKey+`"}}`)
		}
		g.works(t, "Authorization", "Bearer "+k.APIKey+"x") // a refused near-miss
	}
	post(t, g.base+"/api/delete_api_key", `{"auth": {"username": "alice", "password": "alicepw"}, "api_key_id": "`+keys[0].ID+`"}`)
	testutil.Eventually(t, 10*time.Second, "a last_used flush", func() bool { return metricValue(t, metrics, flushes) > flushed })
	g.Stop()

	logs := g.Output()
	if !strings.Contains(logs, `"level":"debug"`) || !strings.Contains(logs, "handled request") {
		t.Fatalf("expected DEBUG and access logs, got:\n%.2000s", logs)
	}
	for _, k := range keys {
		secrets = append(secrets, k.APIKey, k.APIKey[3:20])
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			i := strings.Index(logs, s)
			t.Errorf("secret %.12s… appears in the log: …%s…", s, logs[max(0, i-200):min(len(logs), i+100)])
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReloadsUnderLoad reloads the config 20 times through the admin API
// while clients keep calling with a valid key: no request may fail, and
// file descriptors and goroutines must come back to where they were.
func TestReloadsUnderLoad(t *testing.T) {
	g := startHardened(t, "", "")
	key := g.mint(t, `{"username": "alice", "password": "alicepw"}`).APIKey
	pid := g.Cmd.Process.Pid
	fds := func() int {
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		return len(entries)
	}
	goroutines := func() int {
		r := do(t, http.MethodGet, "http://"+g.admin+"/debug/pprof/goroutine?debug=1", "")
		line, _, _ := strings.Cut(r.body, "\n")
		n, _ := strconv.Atoi(strings.TrimPrefix(line, "goroutine profile: total "))
		return n
	}
	// Settle, then take the baseline.
	for range 50 {
		g.works(t, "Authorization", "Bearer "+key)
	}
	baseFDs, baseG := fds(), goroutines()

	// Clients alternate between the keyed route and a plain one on the
	// same server, so that whatever a reload does to connections can be
	// told apart from what the plugin does. Every HTTP response must be a
	// success. Transport errors are counted by kind: Caddy gives each
	// config its own SO_REUSEPORT socket, and Linux resets connections
	// still queued on the old one when it closes unless
	// net.ipv4.tcp_migrate_req is on (set here when the test may); and Go's
	// http.Server drops a request read on a fresh connection after its
	// Shutdown began (golang/go#75591), which the client sees as EOF.
	migrate := enableTCPMigrateReq(t)
	ctx, cancel := context.WithCancel(context.Background())
	type tally struct{ ok, httpFailed, resets, eofs, otherErrs atomic.Int64 }
	var keyed, plain tally
	var failures sync.Map
	var wg sync.WaitGroup
	lc := &http.Client{Timeout: 10 * time.Second}
	for c := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				time.Sleep(time.Millisecond) // bounded load
				route, tl := "/v1/x", &keyed
				if (i+c)%2 == 1 {
					route, tl = "/plain", &plain
				}
				req, _ := http.NewRequest(http.MethodGet, g.base+route, nil)
				req.Header.Set("Authorization", "Bearer "+key)
				res, err := lc.Do(req)
				switch {
				case err != nil && errors.Is(err, syscall.ECONNRESET):
					tl.resets.Add(1)
					continue
				case err != nil && errors.Is(err, io.EOF):
					tl.eofs.Add(1)
					continue
				case err != nil:
					tl.otherErrs.Add(1)
					failures.Store(route+": "+err.Error(), true)
					continue
				}
				_, _ = bufio.NewReader(res.Body).ReadString(0)
				res.Body.Close()
				if res.StatusCode == 200 {
					tl.ok.Add(1)
				} else {
					tl.httpFailed.Add(1)
					failures.Store(route+": "+res.Status, true)
				}
			}
		})
	}
	defer func() { cancel(); wg.Wait() }() // also when a wait below fails
	answered := func() int64 {
		var n int64
		for _, tl := range []*tally{&keyed, &plain} {
			n += tl.ok.Load() + tl.httpFailed.Load() + tl.resets.Load() + tl.eofs.Load() + tl.otherErrs.Load()
		}
		return n
	}
	cfg := string(mustRead(t, g.config))
	for i := range 20 {
		// A real change each time, so that Caddy does not skip the load.
		changed := strings.Replace(cfg, "last_used_flush_interval 200ms", fmt.Sprintf("last_used_flush_interval %dms", 200+i), 1)
		r := do(t, http.MethodPost, "http://"+g.admin+"/load", changed, "Content-Type", "text/caddyfile")
		if r.status != 200 {
			t.Fatalf("reload %d: %d %s", i, r.status, r.body)
		}
		// Load on each config: 100 more answers before the next reload.
		from := answered()
		testutil.Eventually(t, 30*time.Second, fmt.Sprintf("answers after reload %d", i), func() bool { return answered() >= from+100 })
	}
	cancel()
	wg.Wait()
	for _, r := range []struct {
		name string
		tl   *tally
	}{{"keyed route", &keyed}, {"plain route", &plain}} {
		t.Logf("during 20 reloads (tcp_migrate_req %v), %s: %d ok, %d HTTP failures, %d connection resets, %d EOFs (golang/go#75591), %d other errors",
			migrate, r.name, r.tl.ok.Load(), r.tl.httpFailed.Load(), r.tl.resets.Load(), r.tl.eofs.Load(), r.tl.otherErrs.Load())
	}
	var reasons []string
	failures.Range(func(k, _ any) bool { reasons = append(reasons, k.(string)); return true })
	if keyed.httpFailed.Load()+plain.httpFailed.Load()+keyed.otherErrs.Load()+plain.otherErrs.Load() != 0 || keyed.ok.Load() < 100 {
		t.Fatalf("failed requests during reloads: %v", reasons)
	}
	if migrate && keyed.resets.Load()+plain.resets.Load() != 0 {
		t.Fatalf("connections reset during reloads although tcp_migrate_req is on")
	}
	lc.CloseIdleConnections()
	// Let connections and old servers wind down, then compare.
	var nowFDs, nowG int
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		if nowFDs, nowG = fds(), goroutines(); nowFDs <= baseFDs+2 && nowG <= baseG+5 {
			break
		}
	}
	t.Logf("file descriptors %d -> %d, goroutines %d -> %d", baseFDs, nowFDs, baseG, nowG)
	if nowFDs > baseFDs+2 || nowG > baseG+5 {
		t.Fatalf("leak after reloads: fds %d -> %d, goroutines %d -> %d", baseFDs, nowFDs, baseG, nowG)
	}
}

// enableTCPMigrateReq turns net.ipv4.tcp_migrate_req on for the test, if
// this process may, and reports whether it is on. It is restored after.
func enableTCPMigrateReq(t *testing.T) bool {
	t.Helper()
	const path = "/proc/sys/net/ipv4/tcp_migrate_req"
	was, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	if strings.TrimSpace(string(was)) == "1" {
		return true
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		t.Logf("cannot set %s (%v): connection resets on reload are only counted", path, err)
		return false
	}
	t.Cleanup(func() { _ = os.WriteFile(path, was, 0o644) })
	return true
}

// TestKill9DuringMinting kills the gateway while 64 clients mint keys:
// every key whose 200 arrived must work after a restart, and the file
// must pass bbolt's consistency check.
func TestKill9DuringMinting(t *testing.T) {
	g := startHardened(t, "", "")
	token, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "minter", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second) // they stop at the kill
	mc := &http.Client{Timeout: 5 * time.Second}
	for range 64 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				res, err := mc.Post(g.base+"/api/create_api_key", "application/json", strings.NewReader(`{"auth": "`+token+`"}`))
				if err != nil {
					return // the gateway is gone
				}
				var env struct {
					Result createdKey `json:"result"`
				}
				err = json.NewDecoder(res.Body).Decode(&env)
				res.Body.Close()
				if err == nil && res.StatusCode == 200 {
					mu.Lock()
					got = append(got, env.Result.APIKey)
					mu.Unlock()
				}
			}
		})
	}
	// Kill it in the middle of minting, with plenty of keys to check
	// after (a second of minting gives thousands here).
	testutil.Eventually(t, 60*time.Second, "1000 keys minted", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 1000 })
	if err := g.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	<-g.Done()
	mu.Lock()
	minted := append([]string(nil), got...)
	mu.Unlock()
	if len(minted) < 100 {
		t.Fatalf("only %d keys minted before the kill", len(minted))
	}

	// The file is consistent.
	s, err := boltstore.Open(g.db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	_ = s.DB().View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		return nil
	})
	_ = s.Close()
	if len(problems) > 0 {
		t.Fatalf("bbolt check after kill -9: %v", problems)
	}

	// Every answered key works after a restart.
	restarted := startBinary(t, g.config, g.dir, g.ports)
	defer restarted.Stop()
	for _, k := range minted {
		if !g.works(t, "Authorization", "Bearer "+k) {
			t.Fatalf("key %.10s… was answered 200 before the kill but is unknown after it (%d minted)", k, len(minted))
		}
	}
	t.Logf("%d keys answered before kill -9; all validate after restart; bbolt check clean", len(minted))
}

// TestLockedStoreFailsFast starts a second gateway on a store the first
// one holds: it must stop with a clear error, not hang.
func TestLockedStoreFailsFast(t *testing.T) {
	g := startHardened(t, "", "")
	ports := holdPorts(t, 2)
	other := hardenedConfig(t, g.dir, g.db, ports, "", "")
	cmd := caddyCommand(t, g.dir, ports, []string{"XDG_CONFIG_HOME=" + t.TempDir()}, "run", "--config", other)
	start := time.Now()
	out, err := exitsPromptly(t, cmd)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("second gateway started on a locked store\n%s", out)
	}
	if !strings.Contains(string(out), "locked by another process") {
		t.Fatalf("second gateway's error does not say the file is locked:\n%s", out)
	}
	t.Logf("second gateway refused in %v", took.Round(10*time.Millisecond))
	if !g.works(t, "Authorization", "Bearer "+g.mint(t, `{"username": "alice", "password": "alicepw"}`).APIKey) {
		t.Fatal("first gateway disturbed")
	}
}

// TestFullDiskMinting503 runs the gateway with a file-size limit so that
// the store cannot grow, as on a full disk: minting must answer 503 JSON
// while keys minted before keep validating.
func TestFullDiskMinting503(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "keys.db")
	ports := holdPorts(t, 2)
	config := hardenedConfig(t, dir, db, ports, "", "")
	// SIGXFSZ ignored (inherited by Go), so writes past the limit fail
	// with EFBIG instead of killing the process. 256 KiB holds a fresh
	// store and its first keys. bash passes the ports on to Caddy.
	script := fmt.Sprintf("trap '' XFSZ; ulimit -f 256; exec %q run --config %q", caddyBinary(t), config)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	cmd := caddyCommand(t, dir, ports, nil)
	cmd.Path, cmd.Args = bash, []string{"bash", "-c", script}
	rc := runCaddy(t, cmd)
	g := &hardenedGateway{runningCaddy: rc, base: "http://" + ports[0].Addr}
	waitServing(t, rc, ports[0].Addr)

	first := g.mint(t, `{"username": "alice", "password": "alicepw"}`)
	var full response
	for i := range 5000 {
		full = post(t, g.base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}, "title": "`+strings.Repeat("x", 200)+`"}`)
		if full.status != 200 {
			t.Logf("store full after %d more keys", i)
			break
		}
	}
	if full.status != 503 || full.body != `{"success":false,"error":"the key store is unavailable; try again later"}` {
		t.Fatalf("minting on a full disk: %d %s\n%s", full.status, full.body, rc.Output())
	}
	if !g.works(t, "Authorization", "Bearer "+first.APIKey) {
		t.Fatal("an existing key stopped working when the disk filled up")
	}
}
