package integration

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// staticTokens is an identity source as another program would add one:
// this file and its Caddyfile block are all it takes. It vouches for the
// holders of fixed bearer tokens, as identities of its namespace.
type staticTokens struct {
	Namespace string            `json:"namespace"`
	Tokens    map[string]string `json:"tokens"` // token -> name
}

func init() { caddy.RegisterModule(staticTokens{}) }

func (staticTokens) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "apikeys.identities.static_tokens", New: func() caddy.Module { return new(staticTokens) }}
}

func (s *staticTokens) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the source's name
	for d.NextBlock(0) {
		switch d.Val() {
		case "namespace":
			if !d.AllArgs(&s.Namespace) {
				return d.ArgErr()
			}
		case "token":
			var tok, name string
			if !d.AllArgs(&tok, &name) {
				return d.ArgErr()
			}
			if s.Tokens == nil {
				s.Tokens = map[string]string{}
			}
			s.Tokens[tok] = name
		default:
			return d.Errf("unknown option %q", d.Val())
		}
	}
	return nil
}

func (s *staticTokens) Kind() identity.Kind { return identity.KindOAuth2 }

func (s *staticTokens) Authenticate(_ context.Context, cred identity.Credential, _ string) (identity.Identity, error) {
	for tok, name := range s.Tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(cred.Token)) == 1 {
			return identity.Identity{Owner: keystore.Owner{Source: s.Namespace, Name: name}, FromToken: true}, nil
		}
	}
	return identity.Identity{}, identity.ErrBadCredentials
}

// TestIdentitySourceModule: a source added as a module of
// apikeys.identities mints and manages keys for its identities, in its
// own namespace, and the gateway refuses configurations where two sources
// would check one kind of credential, or a source names no namespace.
func TestIdentitySourceModule(t *testing.T) {
	config := func(block string) string {
		return fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		%s
	}
}

%s
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "user={http.auth.user.id} source={http.auth.user.source}"
}
`, caddytestGlobals, filepath.Join(t.TempDir(), "keys.db"), block, gatewaySite())
	}
	initGateway(t, config(`identity static_tokens {
			namespace partners
			token tok-for-acme acme
		}`))
	k := decodeCreated(t, post(t, gateway+"/api/create_api_key", `{"auth": "tok-for-acme", "title": "acme's"}`))
	if r := do(t, http.MethodGet, gateway+"/v1/x", "", "Authorization", "Bearer "+k.APIKey); r.status != 200 || r.body != "user=acme source=partners" {
		t.Fatalf("the key of a module's identity: %d %q", r.status, r.body)
	}
	if r := post(t, gateway+"/api/fetch_api_keys", `{"auth": "tok-for-acme"}`); r.status != 200 || !strings.Contains(r.body, k.ID) {
		t.Fatalf("fetch_api_keys: %d %s", r.status, r.body)
	}
	if r := post(t, gateway+"/api/create_api_key", `{"auth": "tok-for-nobody"}`); r.status != 401 {
		t.Fatalf("an unknown token: %d %s", r.status, r.body)
	}

	want := map[string]string{
		"two sources of tokens": "checks oauth2 credentials, which a built-in source checks already",
		"no namespace":          `declares no \"namespace\"`,
	}
	for name, block := range map[string]string{
		"two sources of tokens": `identity static_tokens {
			namespace partners
			token t u
		}
		jwt {
			secret 0123456789abcdef0123456789abcdef
			issuer https://idp.test
			audience apikeys
		}`,
		"no namespace": `identity static_tokens {
			token t u
		}`,
	} {
		// Loaded as `caddy reload` would: the admin API refuses it, and
		// the running config stays.
		req, _ := http.NewRequest(http.MethodPost, "http://localhost:2999/load", strings.NewReader(config(block)))
		req.Header.Set("Content-Type", "text/caddyfile")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode < 400 || !strings.Contains(string(body), want[name]) {
			t.Errorf("%s: the config loads, or fails otherwise: %d %s", name, res.StatusCode, body)
		}
	}
	if r := do(t, http.MethodGet, gateway+"/v1/x", "", "Authorization", "Bearer "+k.APIKey); r.status != 200 {
		t.Fatalf("after the refused configs: %d %q", r.status, r.body)
	}
}
