package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// smallDisk mounts a tmpfs of size bytes for the test, unmounted when it
// ends. It needs root (CI runs as root); elsewhere the test is skipped.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounts a small filesystem: needs root (CI runs as root)")
	}
	dir := t.TempDir()
	err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size))
	if errors.Is(err, syscall.EPERM) {
		// Root in a container without CAP_SYS_ADMIN: listed as skipped.
		t.Skipf("mounting a tmpfs is not permitted here: %v", err)
	}
	if err != nil {
		t.Fatalf("mounting a %d-byte tmpfs on %s: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file in dir until the filesystem is full, and returns
// its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// TestFullDiskRefusesMintsAndRecovers: with the store and the credits
// ledger on a filesystem filled while 16 clients mint, mints are answered
// 503 with the API's JSON and Retry-After, in bounded time; keys minted
// before keep validating and spending credits; the log and the metrics
// say the disk is full; once space returns, mints succeed again without
// a restart, every answered key works and the file is sound.
func TestFullDiskRefusesMintsAndRecovers(t *testing.T) {
	disk := smallDisk(t, 16<<20)
	dir := t.TempDir()
	ports := holdPorts(t, 2)
	base, admin := "http://"+ports[0].Addr, ports[1].Addr
	db := filepath.Join(disk, "keys.db")
	config := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		user alice %s
		plan metered {
			credits 1000000
		}
	}
}

%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "ok"
}
`, adminOption(ports[1], 4), db, bcryptHash(t, "alicepw"), base)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startBinary(t, config, dir, ports)
	const mintBody = `{"auth": {"username": "alice", "password": "alicepw"}, "title": "on a small disk"}`
	var plain, metered, cold []createdKey // no credits; credits, used before; credits, not used
	for i := range 50 {
		k := decodeCreated(t, post(t, base+"/api/create_api_key", mintBody))
		switch {
		case i < 20:
			plain = append(plain, k)
			continue
		case i < 40:
			metered = append(metered, k)
		default:
			cold = append(cold, k)
		}
		mustCLI(t, "", "--address", admin, "key", "plan", k.ID, "metered")
	}
	spend := func(k createdKey) response {
		return do(t, http.MethodGet, base+"/v1/", "", "Authorization", "Bearer "+k.APIKey)
	}
	for _, k := range append(plain, metered...) { // metered keys now hold blocks of credits
		if r := spend(k); r.status != 200 {
			t.Fatalf("a key before the disk filled: %d %s", r.status, r.body)
		}
	}

	filler := fill(t, disk)
	var (
		mu       sync.Mutex
		answered []createdKey
		refused  []response
		slowest  time.Duration
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(30 * time.Second)
	for range 16 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				start := time.Now()
				r := post(t, base+"/api/create_api_key", mintBody)
				took := time.Since(start)
				mu.Lock()
				slowest = max(slowest, took)
				if r.status == 200 {
					answered = append(answered, decodeCreated(t, r))
				} else {
					refused = append(refused, r)
				}
				done := len(refused) >= 200
				mu.Unlock()
				if done {
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("disk full: %d mints answered, %d refused; slowest answer %v", len(answered), len(refused), slowest)
	if len(refused) < 200 {
		t.Fatalf("only %d mints refused in 30 s on a full disk", len(refused))
	}
	for _, r := range refused {
		var failure struct {
			Success *bool  `json:"success"`
			Error   string `json:"error"`
		}
		if r.status != http.StatusServiceUnavailable || json.Unmarshal([]byte(r.body), &failure) != nil || failure.Error == "" ||
			r.header.Get("Retry-After") == "" || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("a mint on a full disk: %d %v %s", r.status, r.header, r.body)
		}
	}
	if slowest > 10*time.Second {
		t.Fatalf("a mint on a full disk took %v", slowest)
	}
	for _, k := range append(plain, metered...) {
		if r := spend(k); r.status != 200 {
			t.Fatalf("a key minted before the disk filled, on a full disk: %d %s", r.status, r.body)
		}
	}
	// Credits a key holds no block of are reserved with a write: it fits
	// in the file's free pages, or is refused until there is room.
	coldRefused := 0
	for _, k := range cold {
		switch r := spend(k); {
		case r.status == http.StatusServiceUnavailable && r.header.Get("Retry-After") != "":
			coldRefused++
		case r.status != 200:
			t.Fatalf("a metered key that holds no credits yet, on a full disk: %d %v %s", r.status, r.header, r.body)
		}
	}
	t.Logf("metered keys that held no credits yet: %d of %d refused on the full disk", coldRefused, len(cold))
	if !strings.Contains(gw.Output(), "no space left on device") || !strings.Contains(gw.Output(), `"reason":"disk_full"`) || !strings.Contains(gw.Output(), `"msg":"key not created","user":"alice","source":"password","reason":"disk_full"`) {
		t.Fatal("the log does not say the disk is full")
	}
	if n := metricValue(t, "http://"+admin+"/metrics", `caddy_apikeys_store_errors_total{operation="create_key",reason="disk_full"}`); n == 0 {
		t.Fatal("the metrics do not count the full disk")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "a mint once space returned", func() bool {
		return post(t, base+"/api/create_api_key", mintBody).status == 200
	})
	for _, k := range slices.Concat(plain, metered, cold, answered) {
		if r := spend(k); r.status != 200 {
			t.Fatalf("key %s, answered, does not work after the disk filled: %d %s", k.ID, r.status, r.body)
		}
	}
	gw.Stop()
	if out := mustCLI(t, "", "check", "--db", db); !strings.Contains(out, "sound") {
		t.Fatalf("check after the full disk:\n%s", out)
	}
}

// TestFullDiskAtStartKeepsCreditsInMemory: a gateway started on a full
// disk whose credits ledger is gone (so it must make a new one) serves
// its keys, with credit blocks kept in memory and a warning, instead of
// crashing on a mapping the disk has no room for.
func TestFullDiskAtStartKeepsCreditsInMemory(t *testing.T) {
	disk := smallDisk(t, 16<<20)
	dir := t.TempDir()
	ports := holdPorts(t, 2)
	base := "http://" + ports[0].Addr
	db := filepath.Join(disk, "keys.db")
	config := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf("{\n\t%s\n\tapikeys {\n\t\tstore bolt %s\n\t\tuser alice %s\n\t\tdefault_plan metered\n\t\tplan metered {\n\t\t\tcredits 1000\n\t\t}\n\t}\n}\n\n%s {\n\tbind fd/3\n\tapikeys_api /api/*\n\tapikey_auth /v1/*\n\trespond /v1/* \"ok\"\n}\n",
		adminOption(ports[1], 4), db, bcryptHash(t, "alicepw"), base)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startBinary(t, config, dir, ports)
	key := decodeCreated(t, post(t, base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`))
	gw.Stop()
	if err := os.Remove(db + ".credits"); err != nil {
		t.Fatal(err)
	}
	fill(t, disk)
	gw = startBinary(t, config, dir, ports)
	for range 3 {
		if r := do(t, http.MethodGet, base+"/v1/", "", "Authorization", "Bearer "+key.APIKey); r.status != 200 {
			t.Fatalf("a key on a gateway started on a full disk: %d %s", r.status, r.body)
		}
	}
	if !strings.Contains(gw.Output(), "credit ledger unavailable; credit blocks are kept in memory only") || !strings.Contains(gw.Output(), "no space left on device") {
		t.Fatalf("no warning that the ledger could not be made:\n%s", gw.Output())
	}
}
