package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
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
type runningCaddy struct {
	cmd      *exec.Cmd
	out      *syncBuffer
	done     chan struct{}
	stopOnce sync.Once
}

// stop interrupts Caddy and waits for it to exit (killing it after 10s).
func (rc *runningCaddy) stop() {
	rc.stopOnce.Do(func() {
		_ = rc.cmd.Process.Signal(os.Interrupt)
		select {
		case <-rc.done:
		case <-time.After(10 * time.Second):
			_ = rc.cmd.Process.Kill()
			<-rc.done
		}
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startBinary runs `caddy run --config <config>` with its data directory
// in dataDir, waits until addr accepts connections, and stops it when the
// test ends.
func startBinary(t testing.TB, config, dataDir, addr string) *runningCaddy {
	t.Helper()
	return startBinaryEnv(t, config, dataDir, addr)
}

// startBinaryEnv is startBinary with extra environment variables.
func startBinaryEnv(t testing.TB, config, dataDir, addr string, env ...string) *runningCaddy {
	t.Helper()
	bin := caddyBinary(t)
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("%s is already in use; stop whatever listens there", addr)
	}
	rc := &runningCaddy{out: new(syncBuffer), done: make(chan struct{})}
	rc.cmd = exec.Command(bin, "run", "--config", config)
	rc.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dataDir, "XDG_CONFIG_HOME="+dataDir, "HOME="+dataDir)
	rc.cmd.Env = append(rc.cmd.Env, env...)
	rc.cmd.Stdout, rc.cmd.Stderr = rc.out, rc.out
	if err := rc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := rc.done
	go func() { _ = rc.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		rc.stop()
		if t.Failed() {
			t.Logf("caddy output:\n%s", rc.out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return rc
		}
		select {
		case <-done:
			t.Fatalf("caddy exited early:\n%s", rc.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not listen on %s within 30s:\n%s", addr, rc.out.String())
		}
		time.Sleep(100 * time.Millisecond)
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
	config, base, addr := exampleCopy(t, nil)
	startBinary(t, config, t.TempDir(), addr)
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
