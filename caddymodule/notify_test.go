package caddymodule

import (
	"path/filepath"
	"strings"
	"testing"
)

// Endpoints are checked when the config loads, with errors that say
// what to fix; a secret may come from the environment.
func TestNotifyConfig(t *testing.T) {
	const secret = "whsec_dGhlIHRlc3QncyB3ZWJob29rIHNlY3JldCEh"
	t.Setenv("APIKEYS_TEST_WEBHOOK_SECRET", secret)
	for _, c := range []struct {
		name, notify, wantErr string
	}{
		{"good", `[{"url": "https://h.example/a", "secret": "` + secret + `"}, {"url": "http://127.0.0.1:9/b", "secret": "{env.APIKEYS_TEST_WEBHOOK_SECRET}", "events": ["key.leaked"], "expiring_within": "72h"}]`, ""},
		{"secret not whsec_", `[{"url": "https://h.example/a", "secret": "hunter2hunter2hunter2hunter2"}]`, "whsec_"},
		{"short secret", `[{"url": "https://h.example/a", "secret": "whsec_c2hvcnQ="}]`, "24 random bytes"},
		{"secret from an unset variable", `[{"url": "https://h.example/a", "secret": "{env.APIKEYS_NO_SUCH_VAR}"}]`, "whsec_"},
		{"unknown event", `[{"url": "https://h.example/a", "secret": "` + secret + `", "events": ["key.created"]}]`, `unknown event type "key.created"`},
		{"not a URL", `[{"url": "hooks.example.com", "secret": "` + secret + `"}]`, "not an http(s) URL"},
		{"twice", `[{"url": "https://h.example/a", "secret": "` + secret + `"}, {"url": "https://h.example/a", "secret": "` + secret + `"}]`, "configured twice"},
		{"negative horizon", `[{"url": "https://h.example/a", "secret": "` + secret + `", "expiring_within": "-1h"}]`, "negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			app, err := provisionApp(t, `{"store": `+storeJSON(filepath.Join(t.TempDir(), "k.db"))+`, "notify": `+c.notify+`}`)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatal(err)
			case c.wantErr == "" && app.notifier == nil:
				t.Fatal("no notifier")
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("error %v, want one saying %q", err, c.wantErr)
			}
		})
	}
}
