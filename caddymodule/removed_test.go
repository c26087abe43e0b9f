package caddymodule

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestRemovedModulesSayWhatToUse: a config with the apikey
// authentication provider or the apikey_require_scopes handler (both
// removed: the provider could not answer or charge as apikey_auth does)
// fails to load, naming apikey_auth and how to write it, rather than
// admitting requests by other rules than apikey_auth's.
func TestRemovedModulesSayWhatToUse(t *testing.T) {
	for name, c := range map[string]struct{ handler, want string }{
		"provider": {`{"handler": "authentication", "providers": {"apikey": {"headers": ["X-Api-Key"], "body": true}}}`,
			`{"handler": "apikey_auth", "headers": […], …} in place of {"handler": "authentication", "providers": {"apikey"`},
		"require_scopes handler": {`{"handler": "apikey_require_scopes", "scopes": ["write"]}`,
			`{"handler": "apikey_auth", "require_scopes": […]}`},
	} {
		t.Run(name, func(t *testing.T) {
			store, _ := json.Marshal(filepath.Join(t.TempDir(), "k.db"))
			config := `{
				"admin": {"disabled": true},
				"apps": {
					"apikeys": {"store": {"backend": "bolt", "path": ` + string(store) + `}},
					"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [` + c.handler + `]}]}}}
				}
			}`
			var cfg caddy.Config
			if err := json.Unmarshal([]byte(config), &cfg); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&cfg)
			if err == nil || !strings.Contains(err.Error(), "was removed") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("loading a config with the removed module: %v; want it refused, saying %s", err, c.want)
			}
		})
	}
}
