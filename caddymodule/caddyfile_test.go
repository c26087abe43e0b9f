package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite the golden JSON files of the adapt tests")

func adapt(t *testing.T, caddyfile string) ([]byte, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	return out, err
}

// TestAdapt checks Caddyfile → JSON against golden files in testdata/adapt.
func TestAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt test files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			out, err := adapt(t, string(in))
			if err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := strings.TrimSuffix(file, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("adapted JSON differs from %s:\n%s", golden, pretty.String())
			}
		})
	}
}

func TestAdaptErrors(t *testing.T) {
	cases := map[string]string{
		"unknown global option":    "{\n apikeys {\n  colour blue\n }\n}\n:80 {\n}",
		"global takes no args":     "{\n apikeys extra\n}\n:80 {\n}",
		"user without hash":        "{\n apikeys {\n  user alice\n }\n}\n:80 {\n}",
		"unknown store":            "{\n apikeys {\n  store nosuch\n }\n}\n:80 {\n}",
		"unknown bolt option":      "{\n apikeys {\n  store bolt {\n   colour blue\n  }\n }\n}\n:80 {\n}",
		"bad open_timeout":         "{\n apikeys {\n  store bolt {\n   open_timeout soon\n  }\n }\n}\n:80 {\n}",
		"unknown etcd option":      "{\n apikeys {\n  store etcd http://e:2379 {\n   colour blue\n  }\n }\n}\n:80 {\n}",
		"bad etcd max_stale":       "{\n apikeys {\n  store etcd http://e:2379 {\n   max_stale -1s\n  }\n }\n}\n:80 {\n}",
		"unknown etcd tls option":  "{\n apikeys {\n  store etcd http://e:2379 {\n   tls {\n    colour blue\n   }\n  }\n }\n}\n:80 {\n}",
		"unknown jwt option":       "{\n apikeys {\n  jwt {\n   colour blue\n  }\n }\n}\n:80 {\n}",
		"jwt option without arg":   "{\n apikeys {\n  jwt {\n   issuer\n  }\n }\n}\n:80 {\n}",
		"bad cache_size":           "{\n apikeys {\n  cache_size many\n }\n}\n:80 {\n}",
		"bad queue size":           "{\n apikeys {\n  max_queued_password_checks -1\n }\n}\n:80 {\n}",
		"budget off with more":     "{\n apikeys {\n  unknown_key_budget off now\n }\n}\n:80 {\n}",
		"bad budget rate":          "{\n apikeys {\n  unknown_key_budget {\n   rate fast\n  }\n }\n}\n:80 {\n}",
		"zero budget burst":        "{\n apikeys {\n  unknown_key_budget {\n   burst 0\n  }\n }\n}\n:80 {\n}",
		"unknown budget option":    "{\n apikeys {\n  unknown_key_budget {\n   colour blue\n  }\n }\n}\n:80 {\n}",
		"unknown auth option":      ":80 {\n apikey_auth {\n  colour blue\n }\n}",
		"auth takes no args":       ":80 {\n apikey_auth /v1/* extra\n}",
		"bad body size":            ":80 {\n apikey_auth {\n  body -5\n }\n}",
		"unknown api option":       ":80 {\n apikeys_api {\n  colour blue\n }\n}",
		"bad max_body_bytes":       ":80 {\n apikeys_api {\n  max_body_bytes 0\n }\n}",
		"notify without url":       "{\n apikeys {\n  notify {\n   secret whsec_x\n  }\n }\n}\n:80 {\n}",
		"notify without secret":    "{\n apikeys {\n  notify https://h.example\n }\n}\n:80 {\n}",
		"unknown notify option":    "{\n apikeys {\n  notify https://h.example {\n   secret s\n   colour blue\n  }\n }\n}\n:80 {\n}",
		"notify events empty":      "{\n apikeys {\n  notify https://h.example {\n   secret s\n   events\n  }\n }\n}\n:80 {\n}",
		"notify two urls":          "{\n apikeys {\n  notify https://a.example https://b.example {\n   secret s\n  }\n }\n}\n:80 {\n}",
		"unknown leaks option":     ":80 {\n apikeys_leaks {\n  colour blue\n }\n}",
		"leaks takes no args":      ":80 {\n apikeys_leaks /leaks extra\n}",
		"bad on_leak":              ":80 {\n apikeys_leaks {\n  on_leak delete\n }\n}",
		"bad leaks refresh":        ":80 {\n apikeys_leaks {\n  refresh soon\n }\n}",
		"bad leaks body size":      ":80 {\n apikeys_leaks {\n  max_body_bytes -1\n }\n}",
		"ext_authz takes no args":  "{\n apikeys_ext_authz extra\n}\n:80 {\n}",
		"ext_authz listen twice":   "{\n apikeys_ext_authz {\n  listen a b\n }\n}\n:80 {\n}",
		"ext_authz tls one file":   "{\n apikeys_ext_authz {\n  tls cert.pem\n }\n}\n:80 {\n}",
		"ext_authz bad tls option": "{\n apikeys_ext_authz {\n  tls c k {\n   colour blue\n  }\n }\n}\n:80 {\n}",
		"ext_authz bad size":       "{\n apikeys_ext_authz {\n  max_request_bytes 0\n }\n}\n:80 {\n}",
		"ext_authz unknown option": "{\n apikeys_ext_authz {\n  colour blue\n }\n}\n:80 {\n}",
	}
	for name, cf := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := adapt(t, cf); err == nil {
				t.Errorf("%s: adapted without error", name)
			}
		})
	}
}
