package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/scannertest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// leakGateway is the real binary with a secret-scanning endpoint, on a
// shared etcd store.
type leakGateway struct {
	*runningCaddy
	base, admin string
}

func startLeakGateway(t *testing.T, etcd, scannerURL string) *leakGateway {
	t.Helper()
	ports := holdPorts(t, 2)
	g := &leakGateway{base: "http://" + ports[0].Addr, admin: ports[1].Addr}
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		store etcd %s {
			prefix /leaks/
		}
		user alice %s
		last_used_flush_interval 1h
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
	apikeys_leaks /github/secret-scanning {
		public_keys_url %s
		max_body_bytes 4096
	}
	apikey_auth /v1/*
	respond /v1/* "ok {http.auth.user.id}"
}
`, adminOption(ports[1], 4), etcd, bcryptHash(t, "alicepw"), ports[0].Addr, scannerURL)
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.runningCaddy = startBinary(t, path, dir, ports)
	return g
}

// feedback is one label of an alert's answer.
type feedback struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TestLeakedKeysRevokeThemselves plays GitHub's secret scanning against
// two real gateways sharing etcd: a fake scanner with its own ECDSA key
// publishes the key list on loopback and posts signed alerts. Forged,
// unsigned and oversized alerts change nothing; a mixed batch revokes
// exactly the store's key, which is then refused on both gateways and can
// be neither enabled nor rotated; a replay is harmless; tokens that are
// not keys here cost no store write; no log holds a reported key.
func TestLeakedKeysRevokeThemselves(t *testing.T) {
	c := etcdtest.Start(t, 1)
	scanner := scannertest.NewScanner(t)
	a := startLeakGateway(t, c.Endpoints()[0], scanner.URL)
	b := startLeakGateway(t, c.Endpoints()[0], scanner.URL)
	alert := a.base + "/github/secret-scanning"

	mint := func() createdKey {
		return decodeCreated(t, post(t, a.base+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`))
	}
	works := func(g *leakGateway, key string) bool {
		return do(t, http.MethodGet, g.base+"/v1/x", "", "Authorization", "Bearer "+key).status == http.StatusOK
	}
	leaked, kept := mint(), mint()
	for _, g := range []*leakGateway{a, b} { // both gateways have the keys cached
		for _, k := range []createdKey{leaked, kept} {
			if !works(g, k.APIKey) {
				t.Fatalf("a fresh key refused by %s", g.base)
			}
		}
	}
	send := func(body []byte, headers ...string) response {
		return post(t, alert, string(body), headers...)
	}
	signed := func(body []byte) []string {
		return []string{"Github-Public-Key-Identifier", "k1", "Github-Public-Key-Signature", scanner.Sign(t, "k1", body)}
	}
	report := func(tokens ...string) []byte {
		var matches []map[string]string
		for _, tok := range tokens {
			matches = append(matches, map[string]string{"token": tok, "type": "acme_api_key",
				"url": "https://github.com/octocat/Hello-World/blob/1/config.env", "source": "content"})
		}
		body, err := json.Marshal(matches)
		if err != nil {
			t.Fatal(err)
		}
		return body
	}

	t.Run("forged, unsigned and oversized alerts change nothing", func(t *testing.T) {
		forger := scannertest.NewScanner(t) // its own key, also named k1
		body := report(leaked.APIKey)
		rev := c.Revision(t)
		for name, r := range map[string]response{
			"signed by another key": send(body, "Github-Public-Key-Identifier", "k1", "Github-Public-Key-Signature", forger.Sign(t, "k1", body)),
			"unknown identifier":    send(body, "Github-Public-Key-Identifier", "k9", "Github-Public-Key-Signature", forger.Sign(t, "k1", body)),
			"no signature":          send(body),
			"another body's":        send(body, signed(report(kept.APIKey))...),
		} {
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401 (%s)", name, r.status, r.body)
			}
		}
		big := report(leaked.APIKey, strings.Repeat("x", 5000))
		if r := send(big, signed(big)...); r.status != http.StatusRequestEntityTooLarge {
			t.Errorf("an alert over max_body_bytes: status %d, want 413", r.status)
		}
		if r := do(t, http.MethodGet, alert, ""); r.status != http.StatusMethodNotAllowed {
			t.Errorf("GET: status %d, want 405", r.status)
		}
		if got := c.Revision(t); got != rev {
			t.Errorf("refused alerts wrote to the store (revision %d → %d)", rev, got)
		}
		if !works(a, leaked.APIKey) || !works(b, leaked.APIKey) {
			t.Fatal("a refused alert revoked the key")
		}
	})

	t.Run("tokens that are not keys here cost no store write", func(t *testing.T) {
		notOurs, _, err := keystore.NewKeyAndID("sk-", time.Now()) // well formed, never minted
		if err != nil {
			t.Fatal(err)
		}
		badChecksum := leaked.APIKey[:len(leaked.APIKey)-1] + flipChar(leaked.APIKey[len(leaked.APIKey)-1])
		body := report(notOurs, badChecksum, "sk-short", "")
		rev := c.Revision(t)
		r := send(body, signed(body)...)
		got := decodeFeedback(t, r)
		for i, f := range got {
			if f.Label != "false_positive" {
				t.Errorf("match %d: %+v, want false_positive", i, f)
			}
		}
		if after := c.Revision(t); after != rev {
			t.Errorf("false positives wrote to the store (revision %d → %d)", rev, after)
		}
	})

	var reported []byte
	t.Run("a mixed batch revokes exactly the store's key, everywhere", func(t *testing.T) {
		notOurs, _, _ := keystore.NewKeyAndID("sk-", time.Now())
		reported = report(notOurs, leaked.APIKey, "not a key at all")
		r := send(reported, signed(reported)...)
		at := time.Now()
		got := decodeFeedback(t, r)
		want := []string{"false_positive", "true_positive", "false_positive"}
		for i, tok := range []string{notOurs, leaked.APIKey, "not a key at all"} {
			if got[i].Label != want[i] || got[i].TokenHash != tokenHash(tok) || got[i].TokenType != "acme_api_key" {
				t.Errorf("match %d: %+v, want %s for sha256 %s", i, got[i], want[i], tokenHash(tok))
			}
		}
		if strings.Contains(r.body, leaked.APIKey) {
			t.Error("the answer echoes the leaked key")
		}
		if works(a, leaked.APIKey) {
			t.Fatal("the leaked key still works on the gateway that was told")
		}
		testutil.Eventually(t, 5*time.Second, "the leaked key refused on the second gateway", func() bool {
			return !works(b, leaked.APIKey)
		})
		t.Logf("refused on the second gateway %v after the alert was answered", time.Since(at).Round(time.Millisecond))
		if !works(a, kept.APIKey) || !works(b, kept.APIKey) {
			t.Fatal("the owner's other key was revoked too")
		}
	})

	t.Run("the same alert again is harmless", func(t *testing.T) {
		rev := c.Revision(t)
		got := decodeFeedback(t, send(reported, signed(reported)...))
		if got[1].Label != "true_positive" {
			t.Errorf("replayed: %+v", got)
		}
		if after := c.Revision(t); after != rev {
			t.Errorf("a replay wrote to the store (revision %d → %d)", rev, after)
		}
		if works(a, leaked.APIKey) || !works(a, kept.APIKey) {
			t.Fatal("a replay changed which keys work")
		}
	})

	t.Run("a leaked key stays revoked and is listed as leaked", func(t *testing.T) {
		if r := post(t, "http://"+b.admin+"/apikeys/keys/"+leaked.ID+"/enable", ""); r.status != http.StatusConflict {
			t.Errorf("operator enabling a leaked key: status %d, want 409 (%s)", r.status, r.body)
		}
		auth := `{"auth": {"username": "alice", "password": "alicepw"}`
		if r := post(t, a.base+"/api/rotate_api_key", auth+`, "api_key_id": "`+leaked.ID+`"}`); r.status == http.StatusOK {
			t.Errorf("the owner rotated a leaked key back to life: %s", r.body)
		}
		r := post(t, b.base+"/api/fetch_api_keys", auth+`}`)
		if !strings.Contains(r.body, `"id":"`+leaked.ID+`"`) || !strings.Contains(r.body, `"leaked":true`) {
			t.Errorf("the owner's listing does not show the key as leaked: %s", r.body)
		}
		if works(a, leaked.APIKey) || works(b, leaked.APIKey) {
			t.Fatal("the leaked key works again")
		}
	})

	t.Run("the logs say what happened, never the key", func(t *testing.T) {
		untilLogged(t, a.runningCaddy, `"msg":"key leaked"`)
		for _, g := range []*leakGateway{a, b} {
			if out := g.Output(); strings.Contains(out, leaked.APIKey) || strings.Contains(out, kept.APIKey) {
				t.Errorf("%s logged a reported key", g.base)
			}
		}
		if !strings.Contains(a.Output(), `"key_id":"`+leaked.ID+`"`) {
			t.Error("the audit log does not name the leaked key's id")
		}
	})
}

// flipChar returns another base62 character than c.
func flipChar(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func decodeFeedback(t *testing.T, r response) []feedback {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("alert: status %d, body %s", r.status, r.body)
	}
	var f []feedback
	if err := json.Unmarshal([]byte(r.body), &f); err != nil {
		t.Fatalf("alert answer %s: %v", r.body, err)
	}
	return f
}
