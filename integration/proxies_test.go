package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// The proxies of README's "Other proxies ask this gateway", each started
// from its configuration there with only its addresses moved: the
// gateway's 127.0.0.1:7700, the upstream's 127.0.0.1:9000 and the
// proxy's port 8080.

// readmeBlock is the first ```lang block after the README heading that
// starts with heading.
func readmeBlock(t testing.TB, heading, lang string) string {
	t.Helper()
	readme := string(mustReadTB(t, filepath.Join(repoRoot(t), "README.md")))
	i := strings.Index(readme, "\n"+heading)
	if i < 0 {
		t.Fatalf("README has no heading %q", heading)
	}
	m := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```").FindStringSubmatch(readme[i:])
	if m == nil {
		t.Fatalf("README has no %s block after %q", lang, heading)
	}
	return m[1]
}

// rewrite replaces each old text of block by its new one, failing if one
// is missing: README changed under the test.
func rewrite(t testing.TB, block string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(block, pairs[i]) {
			t.Fatalf("README's block has no %q to rewrite:\n%s", pairs[i], block)
		}
		block = strings.ReplaceAll(block, pairs[i], pairs[i+1])
	}
	return block
}

// verifyUpstream is the upstream behind every proxy: it counts requests
// and keeps the header fields of the last one.
type verifyUpstream struct {
	*httptest.Server
	hits atomic.Int64
	mu   sync.Mutex
	last http.Header
	uri  string
}

func newVerifyUpstream(t *testing.T) *verifyUpstream {
	u := &verifyUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.mu.Lock()
		u.last, u.uri = r.Header.Clone(), r.RequestURI
		u.mu.Unlock()
		fmt.Fprint(w, "upstream")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *verifyUpstream) lastRequest() (http.Header, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last, u.uri
}

func (u *verifyUpstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

// verifyGateway is the real binary on README's gateway configuration,
// with a rate plan, a query parameter and a direct apikey_auth route
// (for the cost comparison) added.
type verifyGateway struct {
	*runningCaddy
	addr, admin string
	config      string // the Caddyfile
}

func startVerifyGateway(t *testing.T, upstream string) *verifyGateway {
	t.Helper()
	return startVerifyGatewayWith(t, upstream, "")
}

// startVerifyGatewayWith is startVerifyGateway with global added to the
// global options, and the listeners of extra passed on as fd/5 and on.
func startVerifyGatewayWith(t *testing.T, upstream, global string, extra ...heldPort) *verifyGateway {
	t.Helper()
	ports := append(holdPorts(t, 2), extra...)
	cfg := rewrite(t, readmeBlock(t, "## Other proxies ask this gateway", "caddyfile"),
		"\tlog default {\n", "\t"+adminOption(ports[1], 4)+"\n"+global+"\tlog default {\n",
		"\t\tplan metered {", "\t\tplan rated {\n\t\t\trate 2/1m per-minute\n\t\t}\n\t\tplan metered {",
		"http://:7700 {\n\tbind 127.0.0.1\n", "http://:"+ports[0].Addr[strings.LastIndexByte(ports[0].Addr, ':')+1:]+" {\n\tbind fd/3\n",
		"\t\theader X-Api-Key\n", "\t\theader X-Api-Key\n\t\tquery api_key\n",
		"\tapikeys_api /api/*\n", "\tapikeys_api /api/*\n\tapikey_auth /direct/* {\n\t\theader X-Api-Key\n\t}\n\treverse_proxy /direct/* "+upstream+"\n")
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &verifyGateway{runningCaddy: startBinary(t, path, dir, ports), addr: ports[0].Addr, admin: ports[1].Addr, config: cfg}
}

// mint makes a key on the gateway through its admin API: body is the
// admin API's new-key request.
func (g *verifyGateway) mint(t testing.TB, body string) createdKey {
	t.Helper()
	r := do(t, http.MethodPost, "http://"+g.admin+"/apikeys/keys", body, "Origin", "http://"+g.admin)
	if r.status != http.StatusOK {
		t.Fatalf("mint %s: %d %s", body, r.status, r.body)
	}
	var k createdKey
	if err := json.Unmarshal([]byte(r.body), &k); err != nil || k.APIKey == "" {
		t.Fatalf("mint %s: %v %s", body, err, r.body)
	}
	return k
}

// call sends a bodiless request to the gateway's admin API, path below
// /apikeys/.
func (g *verifyGateway) call(t testing.TB, method, path string) {
	t.Helper()
	if r := do(t, method, "http://"+g.admin+"/apikeys/"+path, "", "Origin", "http://"+g.admin); r.status/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
}

// freePort is a loopback port nothing listens on, for a proxy that
// cannot inherit a listener (nginx). Another process could take it before
// the proxy does; the proxy then fails to start, visibly.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// listening reports whether a server accepts connections on addr.
func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		_ = c.Close()
	}
	return err == nil
}

// startNginx runs nginx on README's configuration, asking gw and passing
// to upstream, and returns its address. It skips where nginx is not
// installed and -short.
func startNginx(t *testing.T, gw, upstream string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs nginx")
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			t.Fatal("nginx is not installed (.ci/run installs nginx-light)")
		}
	}
	addr := freePort(t)
	server := rewrite(t, readmeBlock(t, "### nginx", "nginx"),
		"server 127.0.0.1:7700;", "server "+gw+";",
		"proxy_pass http://127.0.0.1:9000;", "proxy_pass http://"+upstream+";",
		"listen 8080;", "listen "+addr+";")
	dir := t.TempDir()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n" // the workers read the test's private directory
	}
	// One process, no workers: a worker outlives a master killed with the
	// test, holding its ports and the descriptors it inherited.
	conf := fmt.Sprintf(`%smaster_process off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
%[3]s}
`, user, dir, server)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testutil.StartProcess(t, "nginx", exec.Command(bin, "-p", dir, "-c", path, "-g", "daemon off;"), filepath.Join(dir, "error.log"))
	p.Ready(t, 10*time.Second, "nginx to listen", func() bool { return listening(addr) })
	return addr
}

// builtOnce is a binary built at most once per run, or why it could not
// be.
type builtOnce struct {
	once sync.Once
	path string
	err  error
}

// get is the binary, built by build the first time; it fails the test if
// it could not be built.
func (b *builtOnce) get(t testing.TB, build func() (string, error)) string {
	t.Helper()
	b.once.Do(func() { b.path, b.err = build() })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var stockCaddy builtOnce

// stockCaddyBinary builds Caddy itself, with its standard modules and
// not this plugin (the version go.mod requires), once per run.
func stockCaddyBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a stock Caddy")
	}
	caddyBinary(t) // for buildDir
	root := repoRoot(t)
	return stockCaddy.get(t, func() (string, error) {
		path := filepath.Join(buildDir, "stock-caddy")
		cmd := exec.Command("go", "build", "-o", path, "github.com/caddyserver/caddy/v2/cmd/caddy")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build caddy: %v\n%s", err, out)
		}
		return path, nil
	})
}

// startStockCaddy runs a stock Caddy on README's forward_auth
// configuration and returns its address.
func startStockCaddy(t *testing.T, gw, upstream string) string {
	t.Helper()
	bin := stockCaddyBinary(t)
	ports := holdPorts(t, 1)
	cfg := rewrite(t, readmeBlock(t, "### Caddy without the plugin", "caddyfile"),
		":8080 {\n", "{\n\tadmin off\n}\n\nhttp://"+ports[0].Addr+" {\n\tbind fd/3\n",
		"forward_auth 127.0.0.1:7700 {", "forward_auth "+gw+" {",
		"reverse_proxy 127.0.0.1:9000 {", "reverse_proxy "+upstream+" {")
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startBinaryAt(t, bin, path, dir, ports)
	return ports[0].Addr
}

// traefikVersion is the Traefik the tests run, built from its module.
// (v3.7's go.mod replaces a module by a directory its zip lacks, so it
// cannot be built from the module proxy.)
const traefikVersion = "v3.6.12"

var traefik builtOnce

// traefikBinary is Traefik built from its module, once per machine: the
// binary is kept in the user's cache directory (not the temporary one, as
// etcd's is: it takes minutes to build, see scripts/test.sh) under the
// versions of Traefik and Go, so that later runs start it at once. It
// skips under -short.
func traefikBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs Traefik")
	}
	return traefik.get(t, buildTraefik)
}

func buildTraefik() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir() // no home: kept until the machine's next boot
	}
	path := filepath.Join(cache, "caddy-apikeys", fmt.Sprintf("traefik-%s-%s-%s-%s", traefikVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	// Outside any module, so that only Traefik's own go.mod counts.
	env := append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	dl := exec.Command("go", "mod", "download", "-json", "github.com/traefik/traefik/v3@"+traefikVersion)
	dl.Dir, dl.Env = os.TempDir(), env
	out, err := dl.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download traefik: %v\n%s", err, out)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download traefik: %v %s\n%s", err, mod.Error, out)
	}
	// Built in the module's own directory, read-only in the module cache:
	// its go.mod is then the main module's, and its replace directives
	// (forks of gorilla/mux and others) apply, as in Traefik's releases.
	// Test binaries of several packages may build at once: each builds a
	// file of its own and renames it into place, which is atomic.
	tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
	build := exec.Command("go", "build", "-trimpath", "-o", tmp,
		"-ldflags", "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version="+traefikVersion, "./cmd/traefik")
	build.Dir, build.Env = mod.Dir, env
	if out, err := build.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("building traefik %s: %v\n%s", traefikVersion, err, out)
	}
	return path, os.Rename(tmp, path)
}

// startTraefik runs Traefik with README's dynamic configuration, asking gw
// and passing to upstream, on an entry point of its own, and returns its
// address.
func startTraefik(t *testing.T, gw, upstream string) string {
	t.Helper()
	bin := traefikBinary(t)
	addr := freePort(t)
	dynamic := rewrite(t, readmeBlock(t, "### Traefik", "yaml"),
		"address: http://127.0.0.1:7700/verify", "address: http://"+gw+"/verify",
		"- url: http://127.0.0.1:9000", "- url: http://"+upstream)
	dir := t.TempDir()
	dynamicPath := filepath.Join(dir, "dynamic.yml")
	// The static configuration: one entry point and the file provider; no
	// API, dashboard, ping or metrics (so no entry point of Traefik's own),
	// no calls home.
	static := fmt.Sprintf(`global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  web:
    address: %q
providers:
  file:
    filename: %q
log:
  level: WARN
`, addr, dynamicPath)
	staticPath := filepath.Join(dir, "traefik.yml")
	for name, text := range map[string]string{dynamicPath: dynamic, staticPath: static} {
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := testutil.StartProcess(t, "traefik", exec.Command(bin, "--configFile="+staticPath))
	// The entry point listens before the file provider's routers are in
	// place, and answers 404 until they are.
	p.Ready(t, 30*time.Second, "traefik to route", func() bool {
		res, err := http.Get("http://" + addr + "/v1/x")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusUnauthorized
	})
	return addr
}
