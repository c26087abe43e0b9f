// Package etcdtest runs real etcd clusters on loopback for tests. The
// server is built from the integration/tools/etcd module, so a fresh
// machine needs nothing but the Go module proxy.
package etcdtest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of an etcd server built from the tools module.
// Test binaries share one build per version of that module and of Go,
// kept in the temporary directory, rather than each leaving a copy behind.
// Tests that need it are skipped with -short.
func Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs an etcd cluster")
	}
	buildOnce.Do(func() { binPath, buildErr = build() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func build() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	toolDir := filepath.Join(filepath.Dir(file), "..", "..", "integration", "tools", "etcd")
	version := sha256.New()
	io.WriteString(version, runtime.Version())
	for _, name := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(toolDir, name))
		if err != nil {
			return "", err
		}
		version.Write(b)
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("caddy-apikeys-etcd-%x", version.Sum(nil)[:8]))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	// Test binaries of several packages may build at once: each builds a
	// file of its own and renames it into place, which is atomic.
	tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "go.etcd.io/etcd/server/v3")
	cmd.Dir = toolDir
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("building etcd: %v\n%s", err, out)
	}
	return path, os.Rename(tmp, path)
}

// Cluster is a running etcd cluster whose members listen on loopback.
type Cluster struct {
	// Members in the order of Endpoints.
	Members []*Member
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ClientURL
	}
	return out
}

// Member is one etcd process.
type Member struct {
	// Name of the member in the cluster.
	Name string
	// ClientURL is where clients connect, e.g. http://127.0.0.1:23790: a
	// port that stays the member's through restarts.
	ClientURL string

	args []string
	dir  string // working directory, where its sockets are
	log  *os.File
	tls  *TLSFiles

	mu   sync.Mutex
	proc *testutil.Process // nil while stopped
}

// Options vary the cluster Start runs.
type Options struct {
	// TLS, if set, makes members serve clients over TLS with these files
	// and require a client certificate signed by its CA.
	TLS *TLSFiles
	// QuotaBackendBytes, if set, replaces ProductionQuotaBytes as each
	// member's --quota-backend-bytes, so that a test can fill a member.
	QuotaBackendBytes int64
}

// The settings of ProductionFlags.
const (
	// ProductionQuotaBytes is etcd's largest recommended backend quota,
	// 8 GiB: past it a member raises the NOSPACE alarm and the cluster
	// refuses every write that adds data until the operator frees space
	// and disarms the alarm.
	ProductionQuotaBytes = 8 << 30
	// CompactionRetention is how much history auto-compaction keeps: a
	// watch broken for longer starts afresh (the gateway drops its cache),
	// which max_stale (15 s by default) makes harmless.
	CompactionRetention = "5m"
)

// ProductionFlags are the settings docs/cluster.md asks of a production
// cluster for this store, and that every member Start runs uses:
// periodic auto-compaction keeping CompactionRetention of history, since
// the store rewrites last-used records and every rewrite is a revision
// kept until compacted; a backend quota of quotaBytes; and etcd's default
// of 128 operations per transaction, which the store's transactions rely
// on, stated so that nobody lowers it unawares.
func ProductionFlags(quotaBytes int64) []string {
	return []string{
		"--auto-compaction-mode", "periodic", "--auto-compaction-retention", CompactionRetention,
		"--quota-backend-bytes", fmt.Sprint(quotaBytes),
		"--max-txn-ops", "128",
	}
}

// Start runs a cluster of n members and stops it when the test ends. Its
// data lives in the test's temporary directory.
func Start(t testing.TB, n int) *Cluster { return StartWith(t, n, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	scheme := "http"
	if opts.TLS != nil {
		scheme = "https"
	}
	// Members listen on unix sockets in a directory of this cluster's own,
	// so no other process can take their addresses, and the test reaches
	// each through a loopback port it holds for the whole test
	// (testutil.Forward). etcd resolves unix socket names against its
	// working directory, which keeps them short and equal for every member.
	sockets := testutil.SocketDir(t, "etcd-")
	socketScheme := "unix"
	if opts.TLS != nil {
		socketScheme = "unixs"
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=unix://m%d.peer:0", i, i))
	}
	c := &Cluster{}
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		listen := fmt.Sprintf("%s://%s.client:0", socketScheme, name)
		client := scheme + "://" + testutil.Forward(t, filepath.Join(sockets, name+".client:0"))
		peer := fmt.Sprintf("unix://%s.peer:0", name)
		log, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		m := &Member{Name: name, ClientURL: client, dir: sockets, log: log, args: []string{
			bin,
			"--name", name,
			"--data-dir", filepath.Join(dir, name),
			"--listen-client-urls", listen, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", "apikeys-test",
			// Fast elections, so a stopped leader is replaced within a second.
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--log-level", "warn",
		}}
		m.args = append(m.args, ProductionFlags(cmp.Or(opts.QuotaBackendBytes, ProductionQuotaBytes))...)
		if opts.TLS != nil {
			m.args = append(m.args, "--cert-file", opts.TLS.ServerCert, "--key-file", opts.TLS.ServerKey,
				"--client-cert-auth", "--trusted-ca-file", opts.TLS.CA)
			m.tls = opts.TLS
		}
		c.Members = append(c.Members, m)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Stop()
			_ = m.log.Close()
		}
		if t.Failed() {
			for _, m := range c.Members {
				if b, err := os.ReadFile(m.log.Name()); err == nil {
					t.Logf("etcd %s log (tail):\n%s", m.Name, tail(string(b), 3000))
				}
			}
		}
	})
	for _, m := range c.Members {
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Members {
		if err := m.WaitHealthy(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (m *Member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cmd := exec.Command(m.args[0], m.args[1:]...)
	cmd.Dir = m.dir
	cmd.Stdout, cmd.Stderr = m.log, m.log
	p, err := testutil.Start("etcd "+m.Name, cmd)
	m.proc = p
	return err
}

// Restart starts a stopped member again on its data directory; it rejoins
// the cluster and catches up.
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// Restart starts every stopped member again and waits until all are
// healthy; use it when the whole cluster was down, as a member cannot be
// healthy without a quorum.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	for _, m := range c.Members {
		m.mu.Lock()
		stopped := m.proc == nil
		m.mu.Unlock()
		if stopped {
			if err := m.start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range c.Members {
		if err := m.WaitHealthy(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// Pid is the member's process id, or 0 while it is stopped.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.proc.Cmd.Process == nil {
		return 0
	}
	return m.proc.Cmd.Process.Pid
}

// Stop ends the member gracefully and waits for it to exit; etcd may take
// seconds while it closes client streams. Stopping a stopped member does
// nothing.
func (m *Member) Stop() { m.end(syscall.SIGTERM) }

// Kill ends the member at once, as a crash or a cut cable would, and waits
// for it to exit.
func (m *Member) Kill() { m.end(syscall.SIGKILL) }

func (m *Member) end(sig os.Signal) {
	m.mu.Lock()
	proc := m.proc
	m.proc = nil
	m.mu.Unlock()
	if proc != nil {
		proc.End(sig)
	}
}

// WaitHealthy waits until the member reports itself healthy: it is part of
// a cluster with a leader and can serve requests.
func (m *Member) WaitHealthy(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.ClientURL+"/health", nil)
		resp, err := m.healthClient().Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd %s not healthy after %v (last error: %v)", m.Name, timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// healthClient can reach the member's health endpoint, presenting the
// client certificate if the member requires one.
func (m *Member) healthClient() *http.Client {
	if m.tls == nil {
		return http.DefaultClient
	}
	tc, err := m.tls.ClientConfig()
	if err != nil {
		return http.DefaultClient // the health check fails and says so
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// CPUTime is the user and system time the member's process has used so
// far (from /proc, so Linux only), or 0 while it is stopped.
func (m *Member) CPUTime(t testing.TB) time.Duration {
	t.Helper()
	pid := m.Pid()
	if pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start at ")".
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	var utime, stime int64
	if _, err := fmt.Sscan(fields[11], &utime); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscan(fields[12], &stime); err != nil {
		t.Fatal(err)
	}
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
