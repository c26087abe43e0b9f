package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// discardWriter is a ResponseWriter reused across requests.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

// planRateCredits is a default plan of one rate limit and credits, both
// too large to run out.
const planRateCredits = "default_plan p\n\t\tplan p {\n\t\t\trate 1000000000/1m\n\t\t\tcredits 1000000000000\n\t\t}"

// BenchmarkRoute serves requests through Caddy's compiled HTTP server (the
// handler chain a Caddyfile builds, called in process, no network) to a
// static response: the bare route, the same behind apikey_auth (without
// a plan; with rate and credits, also on a free route; with a rate only),
// behind Caddy's basic_auth as the peer, and apikeys_verify answering a
// proxy's sub-request about the same request (without and with a plan).
// The difference to the bare route is what the key check costs a
// request.
func BenchmarkRoute(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name, global, route, auth string
	}{
		{"bare", "", "", ""},
		{"apikey_auth", "", "apikey_auth", "key"},
		{"apikey_auth+plan", planRateCredits, "apikey_auth", "key"},
		{"apikey_auth+plan/cost=0", planRateCredits, "apikey_auth {\n\t\tcost 0\n\t}", "key"},
		{"apikey_auth+rate", "default_plan p\n\t\tplan p {\n\t\t\trate 1000000000/1m\n\t\t}", "apikey_auth", "key"},
		{"basic_auth", "", "basic_auth {\n\t\talice " + string(hash) + "\n\t}", "basic"},
		{"apikeys_verify", "", "apikeys_verify", "key"},
		{"apikeys_verify+plan", planRateCredits, "apikeys_verify", "key"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv, key := startRoute(b, tc.global, tc.route)
			req, err := http.NewRequest(http.MethodGet, "http://localhost/v1/x", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.RemoteAddr = "192.0.2.1:40000"
			if strings.HasPrefix(tc.route, "apikeys_verify") {
				// A proxy's sub-request about the client's request.
				req.Header.Set("X-Forwarded-Method", "GET")
				req.Header.Set("X-Forwarded-Uri", "/v1/x")
			}
			w := &discardWriter{h: http.Header{}}
			set := func() {
				clear(w.h)
				w.status = 0
				// Every route gets the same request (one Authorization
				// field), so that only the handlers differ.
				if tc.auth == "basic" {
					req.SetBasicAuth("alice", "pw")
				} else {
					req.Header.Set("Authorization", "Bearer "+key)
				}
			}
			set()
			srv.ServeHTTP(w, req)
			if w.status != 0 && w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
			b.ReportAllocs()
			for b.Loop() {
				set()
				srv.ServeHTTP(w, req)
			}
			if w.status != 0 && w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
		})
	}
}

// freeBenchPort returns a port free a moment ago on 127.0.0.1.
func freeBenchPort(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRoute runs a config with one site answering "ok" behind route, and
// returns its compiled server and a valid key.
func startRoute(b *testing.B, global, route string) (*caddyhttp.Server, string) {
	b.Helper()
	port, admin := freeBenchPort(b), freeBenchPort(b)
	cfg := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	storage file_system %s
	log {
		output discard
	}
	apikeys {
		store bolt %s
		%s
	}
}

http://localhost:%d {
	%s
	respond "ok"
}
`, admin, b.TempDir(), filepath.Join(b.TempDir(), "k.db"), global, port, route)
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
	if err != nil {
		b.Fatalf("%v\n%s", err, cfg)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			b.Logf("warning: %s", w.Message)
		}
	}
	if err := caddy.Load(adapted, true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	ctx := caddy.ActiveContext()
	httpApp, err := ctx.App("http")
	if err != nil {
		b.Fatal(err)
	}
	var srv *caddyhttp.Server
	for _, s := range httpApp.(*caddyhttp.App).Servers {
		srv = s
	}
	keysApp, err := ctx.App("apikeys")
	if err != nil {
		b.Fatal(err)
	}
	m, err := keysApp.(*App).keyring.Mint(b.Context(), keystore.Actor{Owner: keystore.Service("bench"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		b.Fatal(err)
	}
	return srv, m.Secret
}
