package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cli runs `caddy apikeys <args>` with stdin and returns whether it
// succeeded, and its standard output, followed by its error output when
// it failed (on success that holds only logs).
func cli(t testing.TB, stdin string, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBinary(t), append([]string{"apikeys"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			t.Fatalf("caddy apikeys %s did not finish within 2 minutes:\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
		}
		return stdout.String() + stderr.String(), false
	}
	return stdout.String(), true
}

func mustCLI(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, ok := cli(t, stdin, args...)
	if !ok {
		t.Fatalf("caddy apikeys %s failed:\n%s", strings.Join(args, " "), out)
	}
	return out
}

// metricValue reads one sample from a Prometheus text exposition.
func metricValue(t testing.TB, metricsURL, sample string) float64 {
	t.Helper()
	r := do(t, http.MethodGet, metricsURL, "")
	sc := bufio.NewScanner(strings.NewReader(r.body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

func TestCLIAndMetricsWithRealBinary(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "keys.db")
	ports := holdPorts(t, 2) // fd/3 the site, fd/4 admin
	admin, base := ports[1].Addr, "http://"+ports[0].Addr
	config := filepath.Join(dir, "Caddyfile")
	err := os.WriteFile(config, []byte(fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
	}
}

%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "user={http.auth.user.id}"
}
`, adminOption(ports[1], 4), db, base)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	gw := startBinary(t, config, dir, ports)
	metrics := "http://" + admin + "/metrics"
	works := func(key string) bool {
		return do(t, http.MethodGet, base+"/v1/", "", "Authorization", "Bearer "+key).status == 200
	}
	mintAs := func(user, pw string) response {
		return post(t, base+"/api/create_api_key", `{"auth": {"username": "`+user+`", "password": "`+pw+`"}}`)
	}

	// Through the admin API while Caddy runs.
	mustCLI(t, "bobpw\n", "--address", admin, "user", "add", "bob")
	bobKey := decodeCreated(t, mintAs("bob", "bobpw"))
	mustCLI(t, "bobpw2", "--address", admin, "user", "passwd", "bob")
	if mintAs("bob", "bobpw").status != 401 || mintAs("bob", "bobpw2").status != 200 {
		t.Fatal("password change did not take")
	}
	if out := mustCLI(t, "", "--address", admin, "user", "list"); !strings.Contains(out, "USERNAME") || !strings.Contains(out, "bob") {
		t.Fatalf("user list:\n%s", out)
	}

	var svc createdKey
	out := mustCLI(t, "", "--address", admin, "--json", "key", "create", "--service", "svc", "--title", "backup", "--scopes", "read,write", "--expires-in", "24h")
	if err := json.Unmarshal([]byte(out), &svc); err != nil || !works(svc.APIKey) {
		t.Fatalf("key create --json: %v\n%s", err, out)
	}
	out = mustCLI(t, "", "--address", admin, "key", "create", "--service", "svc")
	if !strings.Contains(out, "only time the key is shown") || !strings.HasPrefix(out, "sk-") {
		t.Fatalf("key create:\n%s", out)
	}
	if out, ok := cli(t, "", "--address", admin, "key", "create", "--user", "svc"); ok || !strings.Contains(out, "no user svc") {
		t.Fatalf("key create for a password user that does not exist: ok=%v\n%s", ok, out)
	}
	out = mustCLI(t, "", "--address", admin, "key", "list", "--service", "svc")
	if !strings.Contains(out, svc.ID) || !strings.Contains(out, "read,write") || strings.Contains(out, svc.APIKey) {
		t.Fatalf("key list:\n%s", out)
	}
	mustCLI(t, "", "--address", admin, "key", "disable", svc.ID)
	if works(svc.APIKey) {
		t.Fatal("disabled key works")
	}
	if out := mustCLI(t, "", "--address", admin, "key", "list"); !strings.Contains(out, "disabled") {
		t.Fatalf("key list after disable:\n%s", out)
	}
	mustCLI(t, "", "--address", admin, "key", "enable", svc.ID)
	if !works(svc.APIKey) {
		t.Fatal("enabled key refused")
	}
	mustCLI(t, "", "--address", admin, "key", "revoke", svc.ID)
	if works(svc.APIKey) {
		t.Fatal("revoked key works")
	}
	if out, ok := cli(t, "", "--address", admin, "key", "revoke", svc.ID); ok || !strings.Contains(out, "no API key with id") {
		t.Fatalf("revoking twice: ok=%v\n%s", ok, out)
	}
	// Every key of one owner at once; the password user of the same name
	// keeps theirs.
	mustCLI(t, "svcpw\n", "--address", admin, "user", "add", "svc")
	svcUserKey := decodeCreated(t, mintAs("svc", "svcpw"))
	var svcKeys []createdKey
	for range 2 {
		var k createdKey
		if err := json.Unmarshal([]byte(mustCLI(t, "", "--address", admin, "--json", "key", "create", "--service", "svc")), &k); err != nil {
			t.Fatal(err)
		}
		svcKeys = append(svcKeys, k)
	}
	if out := mustCLI(t, "", "--address", admin, "key", "revoke", "--service", "svc"); !strings.Contains(out, `3 keys of "svc" (service) revoked`) {
		t.Fatalf("key revoke --service:\n%s", out)
	}
	if works(svcKeys[0].APIKey) || works(svcKeys[1].APIKey) || !works(svcUserKey.APIKey) {
		t.Fatal("revoking the service's keys did the wrong thing")
	}
	mustCLI(t, "", "--address", admin, "user", "remove", "svc")

	// Scopes a stored user may give keys.
	mustCLI(t, "erinpw\n", "--address", admin, "user", "add", "erin", "--scopes", "read")
	mintScoped := func(scopes string) response {
		return post(t, base+"/api/create_api_key", `{"auth": {"username": "erin", "password": "erinpw"}, "scopes": [`+scopes+`]}`)
	}
	if r := mintScoped(`"read"`); r.status != 200 {
		t.Fatalf("erin mints a read key: %d %s", r.status, r.body)
	}
	if r := mintScoped(`"write"`); r.status != 403 || !strings.Contains(r.body, `\"write\"`) {
		t.Fatalf("erin grants herself write: %d %s", r.status, r.body)
	}
	if out := mustCLI(t, "", "--address", admin, "user", "scopes", "erin", "read", "write"); !strings.Contains(out, "read write") {
		t.Fatalf("user scopes:\n%s", out)
	}
	if r := mintScoped(`"write"`); r.status != 200 {
		t.Fatalf("erin mints a write key once granted: %d %s", r.status, r.body)
	}
	if out := mustCLI(t, "", "--address", admin, "user", "list"); !strings.Contains(out, "read,write") {
		t.Fatalf("user list shows no scopes:\n%s", out)
	}
	mustCLI(t, "", "--address", admin, "user", "remove", "erin")
	if out, ok := cli(t, "", "--address", admin, "user", "add", "carol"); ok || !strings.Contains(out, "password is empty") {
		t.Fatalf("user add without a password: ok=%v\n%s", ok, out)
	}
	if out, ok := cli(t, "", "--db", db, "key", "list"); ok || !strings.Contains(out, "omit --db") {
		t.Fatalf("--db on the running gateway's file: ok=%v\n%s", ok, out)
	}

	// Metrics move in Caddy's own registry.
	minted := metricValue(t, metrics, "caddy_apikeys_keys_minted_total")
	valid := metricValue(t, metrics, `caddy_apikeys_validations_total{result="valid"}`)
	unknown := metricValue(t, metrics, `caddy_apikeys_validations_total{result="malformed"}`)
	failures := metricValue(t, metrics, `caddy_apikeys_credential_failures_total{method="password"}`)
	bobKey2 := decodeCreated(t, mintAs("bob", "bobpw2"))
	works(bobKey2.APIKey)
	works("sk-nonsense")
	mintAs("bob", "wrong")
	for sample, before := range map[string]float64{
		"caddy_apikeys_keys_minted_total":                            minted,
		`caddy_apikeys_validations_total{result="valid"}`:            valid,
		`caddy_apikeys_validations_total{result="malformed"}`:        unknown,
		`caddy_apikeys_credential_failures_total{method="password"}`: failures,
	} {
		if after := metricValue(t, metrics, sample); after != before+1 {
			t.Errorf("%s went from %v to %v, want +1", sample, before, after)
		}
	}
	if metricValue(t, metrics, `caddy_apikeys_store_operation_duration_seconds_count{operation="create_key"}`) == 0 {
		t.Error("store latency histogram is empty")
	}
	if strings.Contains(gw.Output(), "bobpw") {
		t.Error("a password reached the log")
	}
	if !strings.Contains(gw.Output(), `"logger":"apikeys.audit","msg":"user added","user":"bob"`) {
		t.Errorf("no audit event for the added user in:\n%s", gw.Output())
	}

	// Removing a user revokes their keys.
	if out := mustCLI(t, "", "--address", admin, "user", "remove", "bob"); !strings.Contains(out, "3 keys revoked") {
		t.Fatalf("user remove:\n%s", out)
	}
	if works(bobKey.APIKey) || works(bobKey2.APIKey) {
		t.Fatal("removed user's keys still work")
	}

	// Offline, on the db file, once Caddy has stopped.
	gw.Stop()
	if out, ok := cli(t, "", "--address", refusingAddr(t), "key", "list"); ok || !strings.Contains(out, "cannot reach Caddy's admin API") || !strings.Contains(out, "--db") {
		t.Fatalf("admin API down: ok=%v\n%s", ok, out)
	}
	mustCLI(t, "davepw", "--db", db, "user", "add", "dave")
	// Minting needs the key policy: without the config it is refused.
	if out, ok := cli(t, "", "--db", db, "key", "create", "--user", "dave"); ok || !strings.Contains(out, "--config") {
		t.Fatalf("offline key create without the config: ok=%v\n%s", ok, out)
	}
	out = mustCLI(t, "", "--db", db, "--config", config, "--json", "key", "create", "--user", "dave")
	var offline createdKey
	if err := json.Unmarshal([]byte(out), &offline); err != nil {
		t.Fatalf("offline key create: %v\n%s", err, out)
	}
	var listed []map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, "", "--db", db, "--json", "key", "list")), &listed); err != nil || len(listed) != 1 {
		t.Fatalf("offline key list: %v %v", err, listed)
	}

	// The offline changes are there when the gateway comes back.
	startBinary(t, config, dir, ports)
	if !works(offline.APIKey) || mintAs("dave", "davepw").status != 200 {
		t.Fatal("offline changes not seen by the restarted gateway")
	}
}
