package caddymodule

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// meteredGate is an apikey_auth handler at cost 5 on an app whose
// default plan gives each key 100 credits (and whose plan "rated" has a
// rate limit only), with a key of the default plan.
func meteredGate(t *testing.T, g *APIKeyGate) (*APIKeyGate, *App, string) {
	t.Helper()
	app, err := provisionApp(t, `{"store": `+storeJSON(filepath.Join(t.TempDir(), "k.db"))+`,
		"default_plan": "p", "plans": {"p": {"credits": {"amount": 100}}, "rated": {"rates": [{"limit": 1000, "window": "1m"}]}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if g.Cost == nil {
		five := int64(5)
		g.Cost = &five
	}
	if err := g.setUp(app, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	m, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("svc"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return g, app, m.Secret
}

// balance is what is left of key's credits, nothing being in flight.
func balance(t *testing.T, app *App, key string) int64 {
	t.Helper()
	k, err := app.keyring.VerifyWithin(context.Background(), key, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	b, ok, err := app.keyring.BalanceOf(context.Background(), *k)
	if err != nil || !ok {
		t.Fatalf("balance: %v, %v", ok, err)
	}
	return b.Remaining
}

// served is what serveThrough saw of a request.
type served struct {
	w        *httptest.ResponseRecorder
	err      error // what the gate returned
	panicked any   // what the handlers panicked with
}

// serveThrough sends a request with key through g to upstream, and
// recovers what the handlers panic with, as net/http's server does.
func serveThrough(g *APIKeyGate, key string, upstream caddyhttp.HandlerFunc) (s served) {
	r := httptest.NewRequest(http.MethodGet, "/v1/", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	s.w = httptest.NewRecorder()
	defer func() { s.panicked = recover() }()
	s.err = g.ServeHTTP(s.w, r, upstream)
	return s
}

// answered is an upstream that answers 200 at once.
var answered = caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
	w.WriteHeader(http.StatusOK)
	return nil
})

// TestChargedOnceTheUpstreamAnswers runs the ways the handlers after
// apikey_auth end: a request is charged exactly once if they started an
// answer (a final status, a body byte, a flush), however they end after
// it (an error, an abort when the client is gone), and not at all if
// they did not (an error, a panic, Caddy's 499 for a client that left,
// only informational statuses).
func TestChargedOnceTheUpstreamAnswers(t *testing.T) {
	for _, c := range []struct {
		name     string
		upstream caddyhttp.HandlerFunc
		charged  bool
		panics   bool // with http.ErrAbortHandler, which goes on to the server
	}{
		{"a whole answer", func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(http.StatusOK)
			_, err := io.WriteString(w, "data")
			return err
		}, true, false},
		{"aborted after the header (the client left)", func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(http.StatusOK)
			panic(http.ErrAbortHandler)
		}, true, true},
		{"aborted in the body", func(w http.ResponseWriter, _ *http.Request) error {
			_, _ = io.WriteString(w, "data: 1\n\n")
			panic(http.ErrAbortHandler)
		}, true, true},
		{"an error after the header", func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(http.StatusOK)
			return caddyhttp.Error(http.StatusBadGateway, io.ErrUnexpectedEOF)
		}, true, false},
		{"an error status from the upstream", func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(http.StatusInternalServerError)
			return nil
		}, true, false},
		{"a body copied with ReadFrom", func(w http.ResponseWriter, _ *http.Request) error {
			_, err := io.Copy(w, strings.NewReader("data"))
			return err
		}, true, false},
		{"a flush before anything", func(w http.ResponseWriter, _ *http.Request) error {
			return http.NewResponseController(w).Flush()
		}, true, false},
		{"switching protocols", func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(http.StatusSwitchingProtocols)
			return nil
		}, true, false},
		{"early hints, then the answer", func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusOK)
			return nil
		}, true, false},
		{"the upstream unreachable", func(http.ResponseWriter, *http.Request) error {
			return caddyhttp.Error(http.StatusBadGateway, io.ErrUnexpectedEOF)
		}, false, false},
		{"early hints, then an error", func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(http.StatusEarlyHints)
			return caddyhttp.Error(http.StatusBadGateway, io.ErrUnexpectedEOF)
		}, false, false},
		{"the client left before the upstream answered (499)", func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(statusClientClosed)
			return nil
		}, false, false},
		{"a panic before answering", func(http.ResponseWriter, *http.Request) error {
			panic(http.ErrAbortHandler)
		}, false, true},
		{"nothing written", func(http.ResponseWriter, *http.Request) error { return nil }, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, app, key := meteredGate(t, &APIKeyGate{})
			if s := serveThrough(g, key, c.upstream); (s.panicked == http.ErrAbortHandler) != c.panics {
				t.Fatalf("the handlers' panic came out as %v", s.panicked)
			}
			want := int64(100)
			if c.charged {
				want -= 5
			}
			if got := balance(t, app, key); got != want {
				t.Fatalf("balance %d after the request, want %d", got, want)
			}
			// And the credits are settled: the next answered request
			// spends its own cost and nothing more.
			serveThrough(g, key, answered)
			if got := balance(t, app, key); got != want-5 {
				t.Fatalf("balance %d after one more answered request, want %d", got, want-5)
			}
		})
	}
}

// TestChargingKeepsTheWriter: the writer the upstream's handlers get for
// a charged request still flushes to the client and unwraps to the
// server's; free routes and keys without credits get the server's writer
// itself, unwrapped.
func TestChargingKeepsTheWriter(t *testing.T) {
	zero := int64(0)
	for _, c := range []struct {
		name    string
		gate    *APIKeyGate
		noPlan  bool
		wrapped bool
	}{
		{"charged", &APIKeyGate{}, false, true},
		{"a free route", &APIKeyGate{Cost: &zero}, false, false},
		{"a key without credits", &APIKeyGate{}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, app, key := meteredGate(t, c.gate)
			if c.noPlan {
				m, err := app.keyring.Mint(context.Background(), keystore.Actor{Owner: keystore.Service("free"), Operator: true}, keystore.KeyRequest{Plan: "rated"})
				if err != nil {
					t.Fatal(err)
				}
				key = m.Secret
			}
			var got http.ResponseWriter
			s := serveThrough(g, key, func(w http.ResponseWriter, _ *http.Request) error {
				got = w
				return http.NewResponseController(w).Flush()
			})
			if s.err != nil || s.panicked != nil {
				t.Fatal(s.err, s.panicked)
			}
			w := s.w
			if !w.Flushed {
				t.Error("a flush did not reach the client's writer")
			}
			if c.wrapped {
				if u, ok := got.(interface{ Unwrap() http.ResponseWriter }); !ok || u.Unwrap() != w {
					t.Errorf("the handlers' writer %T does not unwrap to the server's", got)
				}
			} else if got != http.ResponseWriter(w) {
				t.Errorf("the handlers got %T, not the server's writer", got)
			}
		})
	}
}
