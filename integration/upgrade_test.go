package integration

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
)

// previousRelease is the revision of the release before this one, whose
// gateways a rolling upgrade on etcd runs beside this one's.
const previousRelease = "d875c14014eae4346ac8b58e7602ac94878c3c13"

var (
	previousOnce sync.Once
	previousPath string
	previousErr  error
	previousSkip string
)

// previousBinary builds previousRelease's ./cmd/caddy once per run, from
// the repository's history (a clone without it skips the test).
func previousBinary(t *testing.T) string {
	t.Helper()
	caddyBinary(t) // the same skip under -short, and one build at a time
	previousOnce.Do(func() {
		root := repoRoot(t)
		if exec.Command("git", "-C", root, "cat-file", "-e", previousRelease+"^{commit}").Run() != nil {
			previousSkip = "the clone lacks the previous release's commit " + previousRelease[:7] + " (a shallow clone?)"
			return
		}
		src, err := os.MkdirTemp("", "apikeys-previous-")
		if err != nil {
			previousErr = err
			return
		}
		archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, previousRelease, src)
		if out, err := archive.CombinedOutput(); err != nil {
			previousErr = err
			t.Logf("%s", out)
			return
		}
		previousPath = filepath.Join(src, "caddy")
		build := exec.Command("go", "build", "-o", previousPath, "./cmd/caddy")
		build.Dir = src
		if out, err := build.CombinedOutput(); err != nil {
			previousErr = err
			t.Logf("building %s: %s", previousRelease[:7], out)
		}
	})
	if previousSkip != "" {
		t.Skip(previousSkip)
	}
	if previousErr != nil {
		t.Fatal(previousErr)
	}
	return previousPath
}

// TestRollingUpgradeOnEtcd: during a rolling upgrade, a gateway of the
// previous release and one of this release share an etcd cluster: keys
// minted on either work on both, and a key revoked on either is refused
// by the other within the time revocations take (well under a second).
func TestRollingUpgradeOnEtcd(t *testing.T) {
	old := previousBinary(t)
	c := etcdtest.Start(t, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer upstream.Close()
	start := func(name, binary string) *clusterGateway {
		ports := holdPorts(t, 2)
		g := &clusterGateway{name: name, base: "http://" + ports[0].Addr, admin: ports[1].Addr}
		g.runningCaddy = startBinaryAt(t, binary, clusterCopy(t, ports), t.TempDir(), ports, clusterEnv(ports, c.Endpoints(), upstream.URL)...)
		return g
	}
	prev, next := start("the previous release", old), start("this release", caddyBinary(t))
	mustCLI(t, "alicepw\n", "--address", next.admin, "user", "add", "alice")
	auth := `{"username": "alice", "password": "alicepw"}`
	for _, pair := range [][2]*clusterGateway{{prev, next}, {next, prev}} {
		minter, other := pair[0], pair[1]
		k := minter.mint(t, auth)
		for _, g := range []*clusterGateway{minter, other} {
			if s := g.status(t, k.APIKey); s != http.StatusOK {
				t.Fatalf("a key minted on %s, used on %s: %d", minter.name, g.name, s)
			}
		}
		revokedAt := time.Now()
		minter.revoke(t, auth, k.ID)
		took, err := other.untilRefused(k.APIKey, revokedAt)
		if err != nil {
			t.Fatalf("a key revoked on %s: %v", minter.name, err)
		}
		t.Logf("revoked on %s, refused by %s after %v", minter.name, other.name, took)
	}
}
