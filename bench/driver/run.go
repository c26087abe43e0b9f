package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/loopback"
)

// setup is one row of the benchmark: a URL, the header that authorizes
// it, and the processes whose CPU time it costs.
type setup struct {
	name, url string
	header    string
	procs     func() []int
}

// sample is one wrk run.
type sample struct {
	rps, p50, p99 float64 // requests/s, milliseconds
	cpuMicros     float64 // server CPU per request
	non2xx        int
}

type run struct {
	config
	work    string
	procs   []*exec.Cmd
	results map[string][]sample
	order   []string
	mint    []sample
	notes   []string // footprint and other figures, as report lines
	goBench string

	smallStore, bigStore string   // copies of the loaded stores
	env                  []string // extra environment for commands
}

func (r *run) main() error {
	r.results = make(map[string][]sample)
	hash, err := r.output(r.caddy, "hash-password", "--plaintext", "benchpw")
	if err != nil {
		return err
	}
	const jwtSecret = "bench-secret-0123456789abcdef0123456789"

	// Key stores, filled through the keystore API.
	small := filepath.Join(r.work, "small.db")
	big := filepath.Join(r.work, "big.db")
	r.smallStore, r.bigStore = small+".pristine", big+".pristine"
	log.Printf("loading 1000 keys")
	if _, err := r.output(r.loadkeys, "-db", small, "-n", "1000", "-out", small+".keys"); err != nil {
		return err
	}
	log.Printf("loading %d keys (about a minute per million)", r.bigKeys)
	out, err := r.output(r.loadkeys, "-db", big, "-n", strconv.Itoa(r.bigKeys), "-out", big+".keys")
	if err != nil {
		return err
	}
	r.notes = append(r.notes, fmt.Sprintf("Store with %d keys, loaded through the keystore API: `%s`", r.bigKeys, strings.TrimSpace(out)))
	smallKey, bigKey := firstLine(small+".keys"), firstLine(big+".keys")
	// Pristine copies for the Go benchmarks, which must not see the keys
	// the gateway mints during the run.
	for _, p := range [][2]string{{small, r.smallStore}, {big, r.bigStore}} {
		if err := copyFile(p[0], p[1]); err != nil {
			return err
		}
		if err := copyFile(p[0]+".keys", p[1]+".keys"); err != nil {
			return err
		}
	}

	// Upstream and the nginx row.
	// Upstream: nginx answering "ok" (a Caddy without nginx). The nginx
	// row is a second nginx: a static map of accepted keys in front of a
	// proxy to the same upstream, so that each row's CPU is the front
	// server's alone.
	// Caddy's sites are on ports held here and passed to it (fd/3); nginx
	// takes no socket from its parent, so it binds a port found free.
	upstream := freeAddr()
	nginxAddr := ""
	var nginxPids func() []int
	if r.nginx != "" {
		if _, err := r.startNginx("upstream", fmt.Sprintf("\tserver {\n\t\tlisten %s;\n\t\tlocation / { return 200 \"ok\"; }\n\t}", upstream), upstream); err != nil {
			return err
		}
		nginxAddr = freeAddr()
		front := fmt.Sprintf(`	upstream backend { server %s; keepalive 64; }
	map_hash_bucket_size 128;
	map $http_x_api_key $api_key_ok { default 0; "%s" 1; }
	server {
		listen %s;
		location / {
			if ($api_key_ok = 0) { return 401; }
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://backend;
		}
	}`, upstream, smallKey, nginxAddr)
		if nginxPids, err = r.startNginx("keycheck", front, nginxAddr); err != nil {
			return err
		}
	} else {
		// Without nginx the upstream is a Caddy answering "ok".
		port, err := loopback.Hold()
		if err != nil {
			return err
		}
		defer port.Close()
		upstream = port.Addr
		if _, err := r.startCaddy("upstream", fmt.Sprintf("{\n\tadmin off\n}\nhttp://%s {\n\tbind fd/3\n\trespond ok\n}\n", upstream), port); err != nil {
			return err
		}
	}

	gwConfig := func(db, addr string) string {
		return fmt.Sprintf(`{
	admin off
	apikeys {
		store bolt %s
		jwt {
			secret %s
			accept_any_audience
		}
	}
}
http://%s {
	bind fd/3
	route /open/* {
		reverse_proxy %s
	}
	route /keyed/* {
		apikey_auth
		reverse_proxy %s
	}
	route /verify {
		apikeys_verify
	}
	route /basic/* {
		basic_auth {
			bench %s
		}
		reverse_proxy %s
	}
	apikeys_api /api/*
}
`, db, jwtSecret, addr, upstream, upstream, strings.TrimSpace(hash), upstream)
	}
	gw1Port, err := loopback.Hold()
	if err != nil {
		return err
	}
	defer gw1Port.Close()
	gw2Port, err := loopback.Hold()
	if err != nil {
		return err
	}
	defer gw2Port.Close()
	gw1Addr, gw2Addr := gw1Port.Addr, gw2Port.Addr
	gw1, err := r.startCaddy("gateway (10^3 keys)", gwConfig(small, gw1Addr), gw1Port)
	if err != nil {
		return err
	}
	gw2, err := r.startCaddy(fmt.Sprintf("gateway (%d keys)", r.bigKeys), gwConfig(big, gw2Addr), gw2Port)
	if err != nil {
		return err
	}
	pidOf := func(c *exec.Cmd) func() []int { return func() []int { return []int{c.Process.Pid} } }
	setups := []setup{
		{name: "no key check", url: "http://" + gw1Addr + "/open/", procs: pidOf(gw1)},
		{name: "apikey_auth, 10^3 keys", url: "http://" + gw1Addr + "/keyed/", header: "Authorization: Bearer " + smallKey, procs: pidOf(gw1)},
		{name: fmt.Sprintf("apikey_auth, %s keys", power10(r.bigKeys)), url: "http://" + gw2Addr + "/keyed/", header: "Authorization: Bearer " + bigKey, procs: pidOf(gw2)},
		{name: "basic_auth (cached)", url: "http://" + gw1Addr + "/basic/", header: "Authorization: Basic YmVuY2g6YmVuY2hwdw==", procs: pidOf(gw1)},
	}
	if nginxAddr != "" {
		setups = append(setups, setup{name: "nginx, static map", url: "http://" + nginxAddr + "/", header: "X-Api-Key: " + smallKey, procs: nginxPids})
		// nginx asking the 10^3-key gateway by auth_request, as README's
		// configuration does: its CPU is the gateway's, per check.
		verifyAddr := freeAddr()
		front := fmt.Sprintf(`	upstream backend { server %s; keepalive 64; }
	upstream apikeys { server %s; keepalive 64; }
	server {
		listen %s;
		location / {
			auth_request /_apikeys;
			auth_request_set $apikeys_user $upstream_http_x_apikeys_user;
			proxy_set_header X-Apikeys-User $apikeys_user;
			proxy_set_header Authorization "";
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://backend;
		}
		location = /_apikeys {
			internal;
			proxy_pass http://apikeys/verify;
			proxy_pass_request_body off;
			proxy_set_header Content-Length "";
			proxy_set_header X-Forwarded-Method $request_method;
			proxy_set_header X-Forwarded-Uri $request_uri;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}`, upstream, gw1Addr, verifyAddr)
		if _, err := r.startNginx("verify", front, verifyAddr); err != nil {
			return err
		}
		setups = append(setups, setup{name: "nginx → apikeys_verify (gateway CPU)", url: "http://" + verifyAddr + "/", header: "Authorization: Bearer " + smallKey, procs: pidOf(gw1)})
	}

	// Warm up (fills the key cache and basic_auth's hash cache), then
	// alternate the setups round by round.
	for _, s := range setups {
		r.order = append(r.order, s.name)
		if _, err := r.measure(s, 2*time.Second, r.connections, ""); err != nil {
			return fmt.Errorf("warm-up of %s: %w", s.name, err)
		}
	}
	for round := 1; round <= r.rounds; round++ {
		// Each round starts one setup later, so that no setup always
		// runs in the same position (after the same neighbour).
		for i := range setups {
			s := setups[(i+round-1)%len(setups)]
			smp, err := r.measure(s, r.duration, r.connections, "")
			if err != nil {
				return err
			}
			r.results[s.name] = append(r.results[s.name], smp)
			log.Printf("round %d/%d  %-28s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  %6.1f µs CPU/req",
				round, r.rounds, s.name, smp.rps, smp.p50, smp.p99, smp.cpuMicros)
		}
	}

	// Minting: HS256-JWT-authenticated create_api_key, 64 clients.
	token, err := hs256(jwtSecret, "bench-minter")
	if err != nil {
		return err
	}
	script := filepath.Join(r.work, "mint.lua")
	body := fmt.Sprintf(`{"auth": %q, "title": "bench"}`, token)
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", body)
	if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
		return err
	}
	// Footprint of the large store's gateway, after its runs.
	if rss, err := rssBytes(gw2.Process.Pid); err == nil {
		r.notes = append(r.notes, fmt.Sprintf("Resident memory of the gateway serving the %d-key store after its runs: %.1f MB", r.bigKeys, float64(rss)/1e6))
	}

	// Minting is a throughput figure: its gateway (with a fresh store)
	// and wrk use both cores.
	r.stopAll()
	pin := r.pin
	r.pin = false
	mintPort, err := loopback.Hold()
	if err != nil {
		return err
	}
	defer mintPort.Close()
	mintDB, mintAddr := filepath.Join(r.work, "mint.db"), mintPort.Addr
	gw3, err := r.startCaddy("gateway (minting)", gwConfig(mintDB, mintAddr), mintPort)
	if err != nil {
		return err
	}
	mintSetup := setup{name: "mint", url: "http://" + mintAddr + "/api/create_api_key", procs: pidOf(gw3)}
	for round := 1; round <= r.rounds; round++ {
		smp, err := r.measure(mintSetup, r.duration, 64, script)
		if err != nil {
			return err
		}
		r.mint = append(r.mint, smp)
		log.Printf("mint round %d/%d  %8.0f keys/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %d", round, r.rounds, smp.rps, smp.p50, smp.p99, smp.non2xx)
	}

	r.pin = pin
	r.stopAll()

	// Go benchmarks and the write count of validations, in-process.
	log.Printf("running the Go benchmarks")
	r.env = []string{fmt.Sprintf("APIKEYS_BENCH_STORE_%d=%s", r.bigKeys, r.bigStore), fmt.Sprintf("APIKEYS_BENCH_STORE_1000=%s", r.smallStore)}
	gb, err := r.outputIn(r.repoRoot, "go", "test", "./caddymodule", "./keystore", "-run", "^$", "-bench", "Authenticate|BasicAuth|ParseKey|CreateAPIKey|CreateKeyParallel", "-benchmem", "-count", "1")
	if err != nil {
		return fmt.Errorf("go benchmarks: %w\n%s", err, gb)
	}
	r.goBench = gb
	zw, err := r.outputIn(r.repoRoot, "go", "test", "./caddymodule", "-run", "TestValidationWritesOnlyFlushes", "-v", "-count", "1")
	if err != nil {
		return fmt.Errorf("write-count test: %w\n%s", err, zw)
	}
	for _, line := range strings.Split(zw, "\n") {
		if strings.Contains(line, "bbolt write transactions") {
			r.notes = append(r.notes, "Writes per validated request (bbolt transaction statistics): "+strings.TrimSpace(line[strings.Index(line, "bbolt"):]))
		}
	}
	return nil
}

// wrk runs one measurement and reads the server's CPU time around it.
func (r *run) measure(s setup, d time.Duration, conns int, script string) (sample, error) {
	threads := "-t2"
	if r.pin {
		threads = "-t1" // one core
	}
	args := []string{threads, "-c" + strconv.Itoa(conns), "-d" + d.String(), "--latency", "--timeout", "5s"}
	if s.header != "" {
		args = append(args, "-H", s.header)
	}
	if script != "" {
		args = append(args, "-s", script)
	}
	args = append(args, s.url)
	before := cpuTicks(s.procs())
	out, err := r.outputCmd(r.pinned(loadCPU, r.wrk, args...))
	after := cpuTicks(s.procs())
	if err != nil {
		return sample{}, fmt.Errorf("wrk %s: %w\n%s", s.name, err, out)
	}
	smp, requests, err := parseWrk(out)
	if err != nil {
		return sample{}, fmt.Errorf("wrk %s: %w\n%s", s.name, err, out)
	}
	if requests > 0 {
		smp.cpuMicros = float64(after-before) / clockTicks * 1e6 / float64(requests)
	}
	return smp, nil
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkP50      = regexp.MustCompile(`\s50%\s+([\d.]+)(us|ms|s)`)
	wrkP99      = regexp.MustCompile(`\s99%\s+([\d.]+)(us|ms|s)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func parseWrk(out string) (sample, int, error) {
	var s sample
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		return s, 0, fmt.Errorf("no request count in wrk output")
	}
	requests, _ := strconv.Atoi(m[1])
	if m := wrkRPS.FindStringSubmatch(out); m != nil {
		s.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	s.p50 = millis(wrkP50.FindStringSubmatch(out))
	s.p99 = millis(wrkP99.FindStringSubmatch(out))
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		s.non2xx, _ = strconv.Atoi(m[1])
	}
	if s.non2xx > requests/100 {
		return s, requests, fmt.Errorf("%d of %d responses were not 2xx", s.non2xx, requests)
	}
	return s, requests, nil
}

func millis(m []string) float64 {
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "us":
		return v / 1000
	case "s":
		return v * 1000
	}
	return v
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on
// Linux on every architecture Go supports).
const clockTicks = 100

// cpuTicks sums user and system time of the processes.
func cpuTicks(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name; utime and stime
		// are fields 14 and 15 of the whole line.
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += utime + stime
	}
	return total
}

func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

// startCaddy runs the gateway on a config whose site binds fd/3, passing
// it port, and waits until it answers there.
func (r *run) startCaddy(name, caddyfile string, port loopback.Port) (*exec.Cmd, error) {
	path := filepath.Join(r.work, strings.NewReplacer(" ", "-", "(", "", ")", "", "^", "").Replace(name)+".Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		return nil, err
	}
	cmd := r.pinned(serverCPU, r.caddy, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+r.work, "XDG_CONFIG_HOME="+r.work)
	cmd.ExtraFiles = []*os.File{port.File}
	logf, err := os.Create(path + ".log")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r.procs = append(r.procs, cmd)
	log.Printf("started %s on %s (pid %d)", name, port.Addr, cmd.Process.Pid)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := loopback.WaitHTTP(ctx, port.Addr); err != nil {
		b, _ := os.ReadFile(path + ".log")
		return cmd, fmt.Errorf("%w; log:\n%s", err, b)
	}
	return cmd, nil
}

// startNginx runs nginx with the given http-block servers, under its own
// prefix directory, and returns a function listing its processes.
func (r *run) startNginx(name, servers, addr string) (func() []int, error) {
	dir := filepath.Join(r.work, "nginx-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	fastcgi_temp_path %[1]s;
	uwsgi_temp_path %[1]s;
	scgi_temp_path %[1]s;
%[2]s
}
`, dir, servers)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cpu := serverCPU
	if name == "upstream" {
		cpu = loadCPU
	}
	cmd := r.pinned(cpu, r.nginx, "-c", path, "-p", dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r.procs = append(r.procs, cmd)
	log.Printf("started nginx %s on %s (pid %d)", name, addr, cmd.Process.Pid)
	if err := waitPort(addr, filepath.Join(dir, "error.log")); err != nil {
		return nil, err
	}
	master := cmd.Process.Pid
	return func() []int { return append(childrenOf(master), master) }, nil
}

func childrenOf(ppid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if p, _ := strconv.Atoi(f[1]); p == ppid {
			out = append(out, pid)
		}
	}
	return out
}

func (r *run) stopAll() {
	for _, c := range slices.Backward(r.procs) {
		if c.ProcessState != nil {
			continue
		}
		_ = c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
	r.procs = nil
}

// The measured server runs on one core, the load generator and the
// upstream on the other, so that they do not take turns on the same core
// and the server's CPU per request is its own.
const serverCPU, loadCPU = "0", "1"

// pinned returns the command run on the given CPU when -pin is on.
func (r *run) pinned(cpu, name string, args ...string) *exec.Cmd {
	if !r.pin {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpu, name}, args...)...)
}

func (r *run) outputCmd(cmd *exec.Cmd) (string, error) {
	timer := time.AfterFunc(20*time.Minute, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *run) output(name string, args ...string) (string, error) {
	return r.outputIn("", name, args...)
}

// outputIn runs a command with a time bound and returns its output.
func (r *run) outputIn(dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), r.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func waitPort(addr, logFile string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(logFile)
	return fmt.Errorf("nothing listens on %s after 60s; log:\n%s", addr, b)
}

// freeAddr is a loopback address that was free a moment ago, for nginx.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

func power10(n int) string {
	e := 0
	for v := n; v >= 10 && v%10 == 0; v /= 10 {
		e++
	}
	if n == pow(10, e) {
		return fmt.Sprintf("10^%d", e)
	}
	return strconv.Itoa(n)
}

func pow(b, e int) int {
	r := 1
	for range e {
		r *= b
	}
	return r
}
