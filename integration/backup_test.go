package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// backupGateway is the real binary on a bbolt file, with a plan, a notify
// endpoint that refuses connections (so that notices stay queued) and
// its admin API on a port of its own.
type backupGateway struct {
	*runningCaddy
	dir, db, base, admin string
}

func startBackupGateway(t *testing.T, dir, notifyAddr string) *backupGateway {
	t.Helper()
	ports := holdPorts(t, 2)
	g := &backupGateway{dir: dir, db: filepath.Join(dir, "keys.db"), base: "http://" + ports[0].Addr, admin: ports[1].Addr}
	config := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		user alice %s
		plan metered {
			credits 100
		}
		notify http://%s {
			secret %s
			events key.revoked
		}
	}
}

%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "ok"
}
`, adminOption(ports[1], 4), g.db, bcryptHash(t, "alicepw"), notifyAddr, webhookSecret, g.base)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.runningCaddy = startBinary(t, config, dir, ports)
	return g
}

func (g *backupGateway) works(t *testing.T, key string) bool {
	return do(t, http.MethodGet, g.base+"/v1/", "", "Authorization", "Bearer "+key).status == 200
}

// answeredKey is a key the gateway answered, and when the answer came.
type answeredKey struct {
	key createdKey
	at  time.Time
}

// TestBackupDuringMintingRestoresIntoAFreshGateway: a backup taken through
// the admin API while 64 clients mint holds every key answered before it
// began; restored into a fresh gateway, those keys work, and the stored
// user, its plan, a set balance and a queued notice are there. A backup
// cut short or with one bit changed is refused and changes nothing.
func TestBackupDuringMintingRestoresIntoAFreshGateway(t *testing.T) {
	notifyAddr := refusingAddr(t)
	a := startBackupGateway(t, t.TempDir(), notifyAddr)
	mustCLI(t, "bobpw\n", "--address", a.admin, "user", "add", "bob")
	mustCLI(t, "", "--address", a.admin, "user", "plan", "bob", "metered")
	bobKey := decodeCreated(t, post(t, a.base+"/api/create_api_key", `{"auth": {"username": "bob", "password": "bobpw"}, "title": "bob's"}`))
	mustCLI(t, "", "--address", a.admin, "key", "credits", bobKey.ID, "--set", "55")
	revoked := decodeCreated(t, post(t, a.base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`))
	mustCLI(t, "", "--address", a.admin, "key", "revoke", revoked.ID) // queues a key.revoked notice

	var (
		mu       sync.Mutex
		answered []answeredKey
		failures []string
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	for range 64 {
		wg.Go(func() {
			for !stop.Load() {
				r := post(t, a.base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}, "title": "during"}`)
				mu.Lock()
				if r.status == 200 {
					answered = append(answered, answeredKey{decodeCreated(t, r), time.Now()})
				} else {
					failures = append(failures, fmt.Sprintf("%d %s", r.status, r.body))
				}
				mu.Unlock()
			}
		})
	}
	minted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(answered)
	}
	testutil.Eventually(t, 60*time.Second, "1000 keys minted", func() bool { return minted() >= 1000 })
	backup := filepath.Join(t.TempDir(), "backup.db")
	began := time.Now()
	out := mustCLI(t, "", "--address", a.admin, "backup", backup)
	ended := time.Now()
	atEnd := minted()
	testutil.Eventually(t, 60*time.Second, "500 keys minted after the backup", func() bool { return minted() >= atEnd+500 })
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d mints failed during the backup, e.g. %s", len(failures), failures[0])
	}
	if !strings.Contains(out, "backup written to "+backup) || !strings.Contains(out, "checked") {
		t.Fatalf("backup:\n%s", out)
	}
	t.Logf("backup of %d keys took %v while minting; %s", minted(), ended.Sub(began), strings.TrimSpace(out))
	if got := mustCLI(t, "", "check", backup); !strings.Contains(got, "sound (backup taken") || !strings.Contains(got, "1 notices pending") {
		t.Fatalf("check of the backup:\n%s", got)
	}

	// Damaged copies are refused and leave the destination as it was.
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(data, []byte("bob's"))
	if at < 0 {
		t.Fatal("bob's key's title is not in the backup")
	}
	flipped := bytes.Clone(data)
	flipped[at] ^= 0x20 // "Bob's"
	for name, bad := range map[string][]byte{"one bit changed": flipped, "cut short": data[:len(data)*3/4]} {
		p := filepath.Join(t.TempDir(), "bad.db")
		if err := os.WriteFile(p, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, ok := cli(t, "", "check", p); ok || !strings.Contains(out, "is damaged") {
			t.Fatalf("check of a backup %s: ok=%v\n%s", name, ok, out)
		}
		dest := filepath.Join(t.TempDir(), "keys.db")
		out, ok := cli(t, "", "restore", p, "--db", dest)
		if ok || !strings.Contains(out, "cannot be restored") || !strings.Contains(out, "is damaged") {
			t.Fatalf("restore of a backup %s: ok=%v\n%s", name, ok, out)
		}
		if _, err := os.Stat(dest); !os.IsNotExist(err) {
			t.Fatalf("a refused restore left %s: %v", dest, err)
		}
	}

	// Restore into a fresh gateway.
	dir := t.TempDir()
	mustCLI(t, "", "restore", backup, "--db", filepath.Join(dir, "keys.db"))
	if got := mustCLI(t, "", "check", "--db", filepath.Join(dir, "keys.db")); !strings.Contains(got, "sound (store file") || !strings.Contains(got, "1 notices pending") {
		t.Fatalf("check of the restored store:\n%s", got)
	}
	if out, ok := cli(t, "", "restore", backup, "--db", filepath.Join(dir, "keys.db")); ok || !strings.Contains(out, "--force") {
		t.Fatalf("restore over a store with records: ok=%v\n%s", ok, out)
	}
	b := startBackupGateway(t, dir, notifyAddr)
	before, after := 0, 0
	for _, k := range answered {
		switch {
		case k.at.Before(began):
			before++
			if !b.works(t, k.key.APIKey) {
				t.Fatalf("key %s, answered %v before the backup began, does not work after the restore", k.key.ID, began.Sub(k.at))
			}
		case k.at.After(ended) && b.works(t, k.key.APIKey):
			after++
		}
	}
	t.Logf("%d keys answered before the backup work after the restore; of those answered after it, %d are in it", before, after)
	if b.works(t, revoked.APIKey) {
		t.Fatal("a key revoked before the backup works after the restore")
	}
	if r := post(t, b.base+"/api/create_api_key", `{"auth": {"username": "bob", "password": "bobpw"}}`); r.status != 200 {
		t.Fatalf("bob, a stored user, cannot mint after the restore: %d %s", r.status, r.body)
	}
	var credits struct {
		Remaining int64 `json:"remaining"`
		Amount    int64 `json:"amount"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, "", "--address", b.admin, "--json", "key", "credits", bobKey.ID)), &credits); err != nil || credits.Remaining != 55 || credits.Amount != 100 {
		t.Fatalf("bob's key's credits after the restore: %+v, %v (want 55 of the plan's 100)", credits, err)
	}
}

// TestDamagedStoreStopsTheGatewayWithWhatToDo: a store file cut short,
// with a page overwritten, with page headers that would send bbolt's own
// check into an endless walk, not a bbolt file at all, or written by a newer
// release: the gateway does not start, and says which file, what is wrong
// and what to do, without a panic; `caddy apikeys check` says the same.
func TestDamagedStoreStopsTheGatewayWithWhatToDo(t *testing.T) {
	// A sound store, made by the gateway itself.
	dir := t.TempDir()
	g := startBackupGateway(t, dir, refusingAddr(t))
	for range 200 {
		decodeCreated(t, post(t, g.base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}, "title": "title-of-a-key"}`))
	}
	g.Stop()
	sound, err := os.ReadFile(g.db)
	if err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(t.TempDir(), "newer.db")
	if err := os.WriteFile(newer, sound, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(newer, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), []byte{0, 0, 0, 0, 0, 0, 0, 99})
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	newerData, _ := os.ReadFile(newer)

	flipPages := func(d []byte) []byte {
		d = bytes.Clone(d)
		for at := 0; ; {
			n := bytes.Index(d[at:], []byte("title-of-a-key"))
			if n < 0 {
				return d
			}
			page := (at + n) / 4096 * 4096
			for i := page; i < page+4096; i++ {
				d[i] ^= 0xa5
			}
			at = page + 4096
		}
	}
	// Every page's header claims 2²⁹ more pages after it: bbolt's own
	// check trusts the claim and walks them (it had not finished after a
	// minute on a 32 KB file).
	hugeOverflows := func(d []byte) []byte {
		d = bytes.Clone(d)
		for page := 2 * 4096; page < len(d); page += 4096 {
			d[page+15] ^= 0x20
		}
		return d
	}
	cases := []struct {
		name  string
		data  []byte
		wants []string
	}{
		{"cut short", sound[:len(sound)/2], []string{"is damaged", "truncated", "restore"}},
		{"pages overwritten", flipPages(sound), []string{"is damaged", "page", "restore"}},
		{"page headers claiming billions of pages", hugeOverflows(sound), []string{"is damaged", "more pages, past its last page", "restore"}},
		{"not a bbolt file", []byte("{\n\tadmin off\n}\n"), []string{"is damaged", "not a bbolt database", "restore"}},
		{"written by a newer release", newerData, []string{"newer release", "schema version 99"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(g.db, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			ports := holdPorts(t, 2)
			config := configWithStore(t, g.db, ports)
			out, err := exitsPromptly(t, caddyCommand(t, dir, ports, nil, "run", "--config", config))
			if err == nil {
				t.Fatalf("the gateway ran on a store %s:\n%s", c.name, out)
			}
			for _, want := range append(c.wants, g.db) {
				if !bytes.Contains(out, []byte(want)) {
					t.Errorf("the gateway's message lacks %q:\n%s", want, out)
				}
			}
			if bytes.Contains(out, []byte("panic")) || bytes.Contains(out, []byte("goroutine ")) {
				t.Fatalf("the gateway panicked:\n%s", out)
			}
			got, ok := cli(t, "", "check", "--db", g.db)
			if ok {
				t.Fatalf("check passed a store %s:\n%s", c.name, got)
			}
			for _, want := range c.wants {
				if !strings.Contains(got, want) {
					t.Errorf("check's message lacks %q:\n%s", want, got)
				}
			}
			if after, _ := os.ReadFile(g.db); !bytes.Equal(after, c.data) {
				t.Fatal("refusing the file changed it")
			}
		})
	}
}

// configWithStore is a minimal gateway on the bbolt file db.
func configWithStore(t *testing.T, db string, ports []heldPort) string {
	t.Helper()
	config := filepath.Join(t.TempDir(), "Caddyfile")
	cfg := fmt.Sprintf("{\n\t%s\n\tapikeys {\n\t\tstore bolt %s\n\t}\n}\n\nhttp://%s {\n\tbind fd/3\n\tapikeys_api /api/*\n\tapikey_auth /v1/*\n\trespond /v1/* \"ok\"\n}\n",
		adminOption(ports[1], 4), db, ports[0].Addr)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return config
}

// TestStoreOfTheFirstReleaseServesItsKeys: a store file written by the
// first release (schema 1, kept in boltstore/testdata) opens in the real
// binary, and its keys work.
func TestStoreOfTheFirstReleaseServesItsKeys(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "boltstore", "testdata", "store-v1.db"))
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "keys.db")
	if err := os.WriteFile(db, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ports := holdPorts(t, 2)
	config := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf("{\n\t%s\n\tapikeys {\n\t\tstore bolt %s\n\t\tuser alice %s\n\t}\n}\n\nhttp://%s {\n\tbind fd/3\n\tapikey_auth /v1/*\n\trespond /v1/* \"{http.auth.user.id}\"\n}\n",
		adminOption(ports[1], 4), db, bcryptHash(t, "x"), ports[0].Addr)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startBinary(t, config, dir, ports)
	for _, key := range []string{"sk-AajV0fq4KbhNIJPHPVTxvyWym3sKu8wVMsUQhKSvEY0ULd55", "sk-JglgqJiRl6rRlk9WgtDnbzAAxenND1xtvdbIN1Tv6v0tq6jT"} {
		if r := do(t, http.MethodGet, "http://"+ports[0].Addr+"/v1/", "", "Authorization", "Bearer "+key); r.status != 200 {
			t.Fatalf("a key of the first release's store: %d %s", r.status, r.body)
		}
	}
}

// TestBackupOfAClusterRestoresIntoAnEmptyPrefix: a backup of a gateway on
// etcd, taken through its admin API while 16 clients mint, is the
// cluster's records at one revision; restored into an empty prefix, a
// gateway on it accepts every key answered before the backup began, and
// a second restore into the same prefix is refused.
func TestBackupOfAClusterRestoresIntoAnEmptyPrefix(t *testing.T) {
	c := etcdtest.Start(t, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer upstream.Close()
	a := startClusterGateway(t, "A", c, upstream.URL)
	mustCLI(t, "bobpw\n", "--address", a.admin, "user", "add", "bob")
	var (
		mu       sync.Mutex
		answered []answeredKey
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	for range 16 {
		wg.Go(func() {
			for !stop.Load() {
				r := post(t, a.base+"/api/create_api_key", `{"auth": {"username": "bob", "password": "bobpw"}}`)
				if r.status != 200 {
					t.Errorf("mint during the backup: %d %s", r.status, r.body)
					return
				}
				mu.Lock()
				answered = append(answered, answeredKey{decodeCreated(t, r), time.Now()})
				mu.Unlock()
			}
		})
	}
	minted := func() int { mu.Lock(); defer mu.Unlock(); return len(answered) }
	testutil.Eventually(t, 60*time.Second, "200 keys minted", func() bool { return minted() >= 200 })
	backup := filepath.Join(t.TempDir(), "cluster-backup.db")
	began := time.Now()
	out := mustCLI(t, "", "--address", a.admin, "backup", backup)
	atEnd := minted()
	testutil.Eventually(t, 60*time.Second, "100 keys minted after the backup", func() bool { return minted() >= atEnd+100 })
	stop.Store(true)
	wg.Wait()
	t.Logf("%s", strings.TrimSpace(out))

	t.Setenv("ETCD_ENDPOINTS", c.Endpoints()[0])
	t.Setenv("UPSTREAM", strings.TrimPrefix(upstream.URL, "http://"))
	ports := holdPorts(t, 2)
	restored := configCopy(t, "Caddyfile.cluster", [][2]string{
		{"http://{$GATEWAY_ADDR::8000} {\n", "http://{$GATEWAY_ADDR::8000} {\n\tbind fd/3\n"},
		{"admin {$CADDY_ADMIN:localhost:2019}", adminOption(ports[1], 4)},
		{"prefix /caddy-apikeys/", "prefix /restored/"},
	}, nil)
	out = mustCLI(t, "", "restore", backup, "--to", restored)
	if !strings.Contains(out, "1 users") {
		t.Fatalf("restore said:\n%s", out)
	}
	if out, ok := cli(t, "", "restore", backup, "--to", restored); ok || !strings.Contains(out, "--force") {
		t.Fatalf("a second restore into the prefix: ok=%v\n%s", ok, out)
	}
	// migrate takes a backup as its source too, and checks it first.
	migrated := configCopy(t, "Caddyfile.cluster", [][2]string{{"prefix /caddy-apikeys/", "prefix /migrated/"}}, nil)
	if out := mustCLI(t, "", "migrate", "--db", backup, "--to", migrated); !strings.Contains(out, "users: 1 copied") || !strings.Contains(out, "keys: ") {
		t.Fatalf("migrate from the backup said:\n%s", out)
	}
	cut := filepath.Join(t.TempDir(), "cut.db")
	if err := os.WriteFile(cut, mustReadTB(t, backup)[:4096*3], 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := cli(t, "", "migrate", "--db", cut, "--to", migrated); ok || !strings.Contains(out, "is damaged") {
		t.Fatalf("migrate from a backup cut short: ok=%v\n%s", ok, out)
	}
	startBinary(t, restored, t.TempDir(), ports, clusterEnv(ports, c.Endpoints(), upstream.URL)...)
	before := 0
	for _, k := range answered {
		if k.at.Before(began) {
			before++
			if r := do(t, http.MethodGet, "http://"+ports[0].Addr+"/v1/x", "", "X-Api-Key", k.key.APIKey); r.status != 200 {
				t.Fatalf("key %s answered before the backup: %d after the restore", k.key.ID, r.status)
			}
		}
	}
	t.Logf("%d keys answered before the backup work on the restored prefix", before)
	if r := post(t, "http://"+ports[0].Addr+"/api/create_api_key", `{"auth": {"username": "bob", "password": "bobpw"}}`); r.status != 200 {
		t.Fatalf("bob after the restore: %d %s", r.status, r.body)
	}
}
