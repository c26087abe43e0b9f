package caddymodule

import (
	"context"

	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestKeyPageServesAssetsWithHeaders(t *testing.T) {
	p := &KeyPage{APIPrefix: `/api"><script>`}
	if err := p.Provision(caddyContext(t)); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, path, ct string }{
		{"page", "/keys/", "text/html"},
		{"any other path", "/keys/anything", "text/html"},
		{"script", "/keys/app.js", "text/javascript"},
		{"stylesheet", "/keys/style.css", "text/css"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			if err := p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, c.path, nil), nil); err != nil {
				t.Fatal(err)
			}
			h := w.Header()
			if w.Code != 200 || !strings.HasPrefix(h.Get("Content-Type"), c.ct) || h.Get("X-Frame-Options") != "DENY" ||
				!strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s: %d %v", c.path, w.Code, h)
			}
			if c.ct == "text/html" && (strings.Contains(w.Body.String(), `"><script>`) || !strings.Contains(w.Body.String(), `data-api="/api&#34;&gt;&lt;script&gt;"`)) {
				t.Errorf("api prefix not escaped in the page")
			}
		})
	}
	w := httptest.NewRecorder()
	err := p.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/keys/", nil), nil)
	if err == nil || w.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %v, Allow %q", err, w.Header().Get("Allow"))
	}
}

func caddyContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}
