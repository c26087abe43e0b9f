package integration

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// exampleCopy writes Caddyfile.example with its listeners (8000, 9001 and
// the admin endpoint) moved to held ports, edited by edit, and returns its
// path, the gateway's base URL and the ports to start it with.
func exampleCopy(t testing.TB, edit func(string) string) (path, base string, ports []heldPort) {
	t.Helper()
	ports = holdPorts(t, 3) // fd/3 the gateway, fd/4 the upstream, fd/5 admin
	gw, up := ports[0].Addr, ports[1].Addr
	path = configCopy(t, "Caddyfile.example", [][2]string{
		{"localhost:8000", gw},
		{"http://:8000 {\n\tbind 127.0.0.1 [::1]\n", "http://:" + ports[0].Number() + " {\n\tbind fd/3\n"},
		{"127.0.0.1:9001", up},
		{"http://:9001 {\n\tbind 127.0.0.1\n", "http://:" + ports[1].Number() + " {\n\tbind fd/4\n"},
		{"\n{\n", "\n{\n\t" + adminOption(ports[2], 5) + "\n"},
	}, edit)
	return path, "http://" + gw, ports
}

// untilLogged waits until the output holds s (Caddy logs its start after
// every app started).
func untilLogged(t *testing.T, rc *runningCaddy, s string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%q in the output", s), func() bool {
		return strings.Contains(rc.Output(), s)
	})
}

const accessLogWarning = "a log records API keys in clear"

// TestExampleKeepsSecretsOutOfLogs runs a copy of Caddyfile.example (its
// access log on, as shipped) with every log at DEBUG and OAuth2 enabled,
// sends keys, passwords and tokens in every place the example accepts
// them, and looks for them in everything the process printed. The same
// run without the example's log filter shows that the check can fail:
// the gateway warns at startup, and the keys are in the log.
func TestExampleKeepsSecretsOutOfLogs(t *testing.T) {
	const jwtComment = "\t\t# jwt {\n\t\t#\tsecret {env.APIKEYS_JWT_SECRET}\n\t\t#\taudience apikeys\n\t\t# }"
	withDebugAndJWT := func(cfg string) string {
		if !strings.Contains(cfg, jwtComment) {
			t.Fatal("Caddyfile.example's commented jwt block changed")
		}
		cfg = strings.Replace(cfg, jwtComment, "\t\tjwt {\n\t\t\tsecret {env.APIKEYS_JWT_SECRET}\n\t\t\taudience apikeys\n\t\t}", 1)
		return strings.Replace(cfg, "{\n", "{\n\tdebug\n", 1)
	}
	for _, shipped := range []bool{true, false} {
		name := "as shipped"
		if !shipped {
			name = "without the log filter"
		}
		t.Run(name, func(t *testing.T) {
			path, base, ports := exampleCopy(t, func(cfg string) string {
				cfg = withDebugAndJWT(cfg)
				if !shipped {
					cfg = strings.ReplaceAll(cfg, "\t\t\trequest>headers>X-Api-Key delete\n", "")
				}
				return cfg
			})
			rc := startBinary(t, path, t.TempDir(), ports, "APIKEYS_JWT_SECRET="+jwtSecret)
			untilLogged(t, rc, "serving initial configuration")
			secrets := exerciseExample(t, base)
			// A request sent after all the others is in the access log:
			// theirs are too (and stop waits for requests in flight).
			do(t, http.MethodGet, base+"/logged-last", "")
			untilLogged(t, rc, `"uri":"/logged-last"`)
			rc.Stop()
			logs := rc.Output()
			if !strings.Contains(logs, `"level":"debug"`) || !strings.Contains(logs, `"logger":"http.log.access`) {
				t.Fatalf("expected DEBUG and access logs, got:\n%.3000s", logs)
			}
			var leaked []string
			for _, s := range secrets {
				if strings.Contains(logs, s) {
					leaked = append(leaked, s)
				}
			}
			warned := strings.Count(logs, accessLogWarning)
			if shipped {
				// Keyed requests are logged with their owner.
				if !strings.Contains(logs, `"user_id":"example_username"`) {
					t.Error("no access log line names the key's owner as user_id")
				}
				if warned != 0 {
					t.Errorf("the example warns about its own access log:\n%s", logs)
				}
				for _, s := range leaked {
					i := strings.Index(logs, s)
					t.Errorf("secret %.12s… is in the log: …%s…", s, logs[max(0, i-300):min(len(logs), i+80)])
				}
				return
			}
			// The example's gateway is one of its two servers (named by port).
			if warned != 1 || !regexp.MustCompile(`"server":"srv\d","field":"request>headers>X-Api-Key"`).MatchString(logs) {
				t.Errorf("%d startup warnings naming the server and X-Api-Key, want 1:\n%s", warned, logs)
			}
			if len(leaked) == 0 {
				t.Error("without the filter no key reached the log: this test could not fail")
			}
		})
	}
}

// exerciseExample sends keys, passwords and tokens to the example in every
// place it accepts them, and returns every secret sent.
func exerciseExample(t *testing.T, base string) []string {
	t.Helper()
	const user, pw, wrong = "example_username", "example_password", "wrong-password-4711"
	token := hs256(t, map[string]any{"sub": "tokenuser", "aud": "apikeys", "exp": time.Now().Add(time.Hour).Unix()})
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
	secrets := []string{pw, wrong, token, jwtSecret, basic}
	var keys []createdKey
	auth := fmt.Sprintf(`{"username": %q, "password": %q}`, user, pw)
	keys = append(keys, decodeCreated(t, post(t, base+"/api/create_api_key", `{"auth": `+auth+`}`)))
	keys = append(keys, decodeCreated(t, post(t, base+"/api/create_api_key", "", "Authorization", "Basic "+basic)))
	keys = append(keys, decodeCreated(t, post(t, base+"/api/create_api_key", `{"auth": "`+token+`"}`)))
	keys = append(keys, decodeCreated(t, post(t, base+"/api/create_api_key", "", "Authorization", "Bearer "+token)))
	post(t, base+"/api/create_api_key", fmt.Sprintf(`{"auth": {"username": %q, "password": %q}}`, user, wrong))
	post(t, base+"/api/fetch_api_keys", `{"auth": "`+token+`"}`)
	for i, k := range keys {
		// API keys where they are refused: in the body and as Bearer.
		if r := post(t, base+"/api/create_api_key", `{"auth": {"api_key": "`+k.APIKey+`"}}`); r.status != 403 {
			t.Fatalf("key in the create body: %d", r.status)
		}
		post(t, base+"/api/fetch_api_keys", "", "Authorization", "Bearer "+k.APIKey)
		// Where they are accepted: Bearer and X-Api-Key (any case),
		// valid or a near miss.
		for _, h := range [][]string{{"Authorization", "Bearer " + k.APIKey}, {"X-Api-Key", k.APIKey}, {"x-api-key", k.APIKey}} {
			if r := do(t, http.MethodGet, base+"/v1/hello", "", h...); r.status != 200 {
				t.Fatalf("key %d in %s: %d %s", i, h[0], r.status, r.body)
			}
		}
		do(t, http.MethodGet, base+"/v1/hello", "", "X-Api-Key", k.APIKey[:len(k.APIKey)-1]+"x")
		do(t, http.MethodGet, base+"/v1/hello", "", "Authorization", "Bearer "+k.APIKey+"x")
		secrets = append(secrets, k.APIKey, k.APIKey[3:20], k.APIKey[len(k.APIKey)-20:])
	}
	return secrets
}

// TestLogWarningsAtStartup starts the gateway with logs that do and do
// not filter the places apikey_auth reads keys from, and reads its
// startup warnings.
func TestLogWarningsAtStartup(t *testing.T) {
	const filterBoth = "format filter {\n\t\t\trequest>headers>X-Api-Key delete\n\t\t\trequest>uri query {\n\t\t\t\tdelete api_key\n\t\t\t}\n\t\t}"
	const filterHeader = "format filter {\n\t\t\trequest>headers>X-Api-Key delete\n\t\t}"
	cases := []struct {
		name, global, site string
		want               []string // fields warned about
	}{
		{"every log filtered", "log default {\n\t\t" + filterBoth + "\n\t}", "log {\n\t\t" + filterBoth + "\n\t}", nil},
		{"access log misses the query", "log default {\n\t\t" + filterBoth + "\n\t}", "log {\n\t\t" + filterHeader + "\n\t}", []string{"request>uri"}},
		{"no access log, errors unfiltered", "", "", []string{"request>headers>X-Api-Key", "request>uri"}},
		{"credentials logged", "servers {\n\t\tlog_credentials\n\t}\n\tlog default {\n\t\t" + filterBoth + "\n\t}", "log {\n\t\t" + filterBoth + "\n\t}", []string{"request>headers>Authorization"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			port := holdPort(t)
			cfg := fmt.Sprintf("{\n\tadmin off\n\t%s\n\tapikeys {\n\t\tstore bolt %s\n\t}\n}\n\nhttp://%s {\n\tbind fd/3\n\t%s\n\tapikey_auth /v1/* {\n\t\theader X-Api-Key\n\t\tquery api_key\n\t}\n\tapikey_auth /v2/* {\n\t\theader X-Api-Key\n\t}\n\trespond ok\n}\n",
				c.global, filepath.Join(dir, "k.db"), port.Addr, c.site)
			path := filepath.Join(dir, "Caddyfile")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			rc := startBinary(t, path, dir, []heldPort{port})
			untilLogged(t, rc, "serving initial configuration")
			logs := rc.Output()
			var got []string
			for line := range strings.SplitSeq(logs, "\n") {
				if m := regexp.MustCompile(`"field":"([^"]+)"`).FindStringSubmatch(line); m != nil && strings.Contains(line, accessLogWarning) {
					if !strings.Contains(line, `"server":"srv0"`) {
						t.Errorf("warning does not name the server: %s", line)
					}
					got = append(got, m[1])
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Fatalf("warned about %q, want %q (once each):\n%s", got, c.want, logs)
			}
		})
	}
}
