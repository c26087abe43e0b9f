package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/loopback"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// repoRoot is the module's top directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Dir(filepath.Dir(file))
}

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
	buildDir  string
)

// caddyBinary builds ./cmd/caddy once per test run.
func caddyBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "apikeys-caddy-")
		if buildErr != nil {
			return
		}
		builtPath = filepath.Join(buildDir, "caddy")
		cmd := exec.Command("go", "build", "-o", builtPath, "./cmd/caddy")
		cmd.Dir = repoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtPath
}

// runningCaddy is a started binary; its output is kept for failures.
type runningCaddy struct{ *testutil.Process }

// runCaddy starts cmd as a gateway the test owns.
func runCaddy(t testing.TB, cmd *exec.Cmd) *runningCaddy {
	t.Helper()
	return &runningCaddy{testutil.StartProcess(t, "caddy", cmd)}
}

// heldPort is a loopback port the test listens on and keeps until it
// ends, handed to the caddy binary as an inherited file (see package
// loopback). While no gateway runs, connections to it wait in its backlog
// rather than being refused.
type heldPort = loopback.Port

// holdPort holds a port for the rest of the test.
func holdPort(t testing.TB) heldPort {
	t.Helper()
	p, err := loopback.Hold()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// holdPorts holds n ports.
func holdPorts(t testing.TB, n int) []heldPort {
	t.Helper()
	ports := make([]heldPort, n)
	for i := range ports {
		ports[i] = holdPort(t)
	}
	return ports
}

// adminOption is the global option that serves Caddy's admin API on p,
// passed as fd/<fd>. Caddy allows no origin on a descriptor unless told,
// and the CLI (like a browser) sends the address it was given as one.
func adminOption(p heldPort, fd int) string {
	return fmt.Sprintf("admin fd/%d {\n\t\torigins %s\n\t}", fd, p.Addr)
}

// refusingAddr is a loopback address that refuses connections, as a
// stopped server's does: a port bound, so that no other process can
// listen on it, but not listening. (A held port would accept the
// connection into its backlog and leave the client waiting.)
func refusingAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// configCopy writes a copy of the repository's Caddyfile name with every
// occurrence of each old text replaced by its new one, then edited by edit
// (if not nil), and returns its path. It fails the test if an old text is
// missing: the file changed under the test.
func configCopy(t testing.TB, name string, rewrites [][2]string, edit func(string) string) string {
	t.Helper()
	cfg := string(mustReadTB(t, filepath.Join(repoRoot(t), name)))
	for _, r := range rewrites {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("%s has no %q to rewrite", name, r[0])
		}
		cfg = strings.ReplaceAll(cfg, r[0], r[1])
	}
	if edit != nil {
		cfg = edit(cfg)
	}
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// caddyCommand is `caddy <args>` with its data and config directories in
// dataDir and ports[i] inherited as descriptor 3+i, so that the config
// names them fd/3, fd/4, and so on.
func caddyCommand(t testing.TB, dataDir string, ports []heldPort, env []string, args ...string) *exec.Cmd {
	t.Helper()
	return binaryCommand(caddyBinary(t), dataDir, ports, env, args...)
}

// binaryCommand is caddyCommand for another build of the gateway, such as
// an earlier revision a benchmark compares with.
func binaryCommand(binary, dataDir string, ports []heldPort, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	testutil.DieWithParent(cmd)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dataDir, "XDG_CONFIG_HOME="+dataDir, "HOME="+dataDir)
	cmd.Env = append(cmd.Env, env...)
	for _, p := range ports {
		cmd.ExtraFiles = append(cmd.ExtraFiles, p.File)
	}
	return cmd
}

// loadConfig loads a Caddyfile into the gateway whose admin API is at
// admin, as `caddy reload` does. The previous config's server then closes
// its idle connections, and a request sent on one as it does sees EOF
// (golang/go#75591; TestReloadsUnderLoad counts them): the test's client
// starts on new ones, as a client that saw the reload would.
func loadConfig(t testing.TB, admin, caddyfile string) {
	t.Helper()
	if r := do(t, http.MethodPost, "http://"+admin+"/load", caddyfile, "Content-Type", "text/caddyfile"); r.status != 200 {
		t.Fatalf("loading a new config: %d %s", r.status, r.body)
	}
	client.CloseIdleConnections()
}

// exitsPromptly runs cmd and returns its combined output and error; it
// fails the test if cmd has not exited within 30 seconds (a gateway that
// should refuse to start, but serves).
func exitsPromptly(t testing.TB, cmd *exec.Cmd) ([]byte, error) {
	t.Helper()
	var out []byte
	var err error
	done := make(chan struct{})
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
		return out, err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v still running after 30s, want it to stop with an error\n%s", cmd.Args, out)
		return nil, nil
	}
}

// startBinary runs `caddy run --config <config>` (see caddyCommand for
// dataDir, ports and env), waits until it answers HTTP on ports[0], and
// stops it when the test ends.
func startBinary(t testing.TB, config, dataDir string, ports []heldPort, env ...string) *runningCaddy {
	t.Helper()
	return startBinaryAt(t, caddyBinary(t), config, dataDir, ports, env...)
}

// startBinaryAt is startBinary for another build of the gateway.
func startBinaryAt(t testing.TB, binary, config, dataDir string, ports []heldPort, env ...string) *runningCaddy {
	t.Helper()
	rc := runCaddy(t, binaryCommand(binary, dataDir, ports, env, "run", "--config", config))
	waitServing(t, rc, ports[0].Addr)
	return rc
}

// waitServing waits until rc answers an HTTP request on addr.
func waitServing(t testing.TB, rc *runningCaddy, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeoutCause(context.Background(), 30*time.Second, errors.New("not within 30s"))
	defer cancel()
	go func() {
		select {
		case <-rc.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := loopback.WaitHTTP(ctx, addr); err != nil {
		select {
		case <-rc.Done():
			t.Fatalf("caddy exited early:\n%s", rc.Output())
		default:
		}
		t.Fatalf("%v:\n%s", err, rc.Output())
	}
}

// runClient runs a client program and returns its trimmed standard output.
func runClient(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed (.ci/run installs it)", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", name, args, err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// seedBlock returns the first fenced code block of the given language in
// the API documentation's create_api_key.md (a copy is kept in
// testdata/seed, so that the examples run in any clone).
func seedBlock(t *testing.T, lang string) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), "integration", "testdata", "seed", "create_api_key.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatalf("no %s block in %s", lang, path)
	}
	return string(m[1])
}

var printedKey = regexp.MustCompile(`API_KEY: (\S+)`)

// TestExampleGatewayWithRealClients builds the binary, runs it on a copy
// of Caddyfile.example with only its ports moved (so that it runs next to
// the README's demo), and drives it with Python requests, Node's fetch,
// curl, and the API documentation's own examples, their URL pointed at
// the copy.
func TestExampleGatewayWithRealClients(t *testing.T) {
	root := repoRoot(t)
	config, base, ports := exampleCopy(t, nil)
	startBinary(t, config, t.TempDir(), ports)
	seedExample := func(lang string) string {
		code := seedBlock(t, lang)
		if !strings.Contains(code, "http://localhost:8000/") {
			t.Fatalf("the %s example no longer calls http://localhost:8000/:\n%s", lang, code)
		}
		return strings.ReplaceAll(code, "http://localhost:8000/", base+"/")
	}
	clients := filepath.Join(root, "integration", "testdata", "clients")

	useKey := func(t *testing.T, key string) {
		t.Helper()
		r := do(t, http.MethodGet, base+"/v1/anything", "", "Authorization", "Bearer "+key)
		if r.status != 200 || !strings.Contains(r.body, `"user": "example_username"`) {
			t.Fatalf("key %s…: %d %s", key[:8], r.status, r.body)
		}
	}

	t.Run("python requests", func(t *testing.T) {
		id := runClient(t, clients, "python3", "client.py", base, "example_username", "example_password")
		if len(id) != 32 {
			t.Fatalf("client printed %q, want a key id", id)
		}
	})
	t.Run("node fetch", func(t *testing.T) {
		id := runClient(t, clients, "node", "client.mjs", base, "example_username", "example_password")
		if len(id) != 32 {
			t.Fatalf("client printed %q, want a key id", id)
		}
	})
	t.Run("seed python example", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "seed.py"), []byte(seedExample("python")), 0o644); err != nil {
			t.Fatal(err)
		}
		out := runClient(t, dir, "python3", "seed.py")
		m := printedKey.FindStringSubmatch(out)
		if m == nil || !strings.Contains(out, `"success": true`) {
			t.Fatalf("seed example printed:\n%s", out)
		}
		useKey(t, m[1])
	})
	t.Run("seed javascript example", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "seed.js"), []byte(seedExample("javascript")), 0o644); err != nil {
			t.Fatal(err)
		}
		out := runClient(t, dir, "node", "seed.js")
		m := printedKey.FindStringSubmatch(out)
		if m == nil || !strings.Contains(out, `"success": true`) {
			t.Fatalf("seed example printed:\n%s", out)
		}
		useKey(t, m[1])
	})
	t.Run("curl walkthrough", func(t *testing.T) {
		out := runClient(t, root, "curl", "-sS", "-u", "example_username:example_password", "-X", "POST", base+"/api/create_api_key")
		m := regexp.MustCompile(`"api_key":"([^"]+)"`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("curl got %s", out)
		}
		useKey(t, m[1])
	})
}
