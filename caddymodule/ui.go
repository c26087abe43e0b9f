package caddymodule

import (
	"bytes"
	"embed"
	"html"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(KeyPage{})
	httpcaddyfile.RegisterHandlerDirective("apikeys_ui", parseKeyPage)
	httpcaddyfile.RegisterDirectiveOrder("apikeys_ui", httpcaddyfile.Before, "basic_auth")
}

//go:embed ui/index.html ui/app.js ui/style.css
var uiFiles embed.FS

// uiSecurityHeaders keep the page to its own scripts and styles, out of
// frames, and out of caches.
var uiSecurityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
		"img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
	"X-Frame-Options":        "DENY",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"Cache-Control":          "no-store",
}

// KeyPage serves a self-service page where key owners sign in (with a
// password or an OAuth2 token) and create, list, rotate and revoke their
// keys. It is plain HTML, CSS and JavaScript embedded in the binary, and
// talks only to the apikeys_api endpoints of the same origin; it keeps
// the credential in memory only. Serve it over HTTPS.
type KeyPage struct {
	// Where the page finds the apikeys_api endpoints. Default: "/api".
	APIPrefix string `json:"api_prefix,omitempty"`

	index []byte
}

// CaddyModule returns the Caddy module information.
func (KeyPage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikeys_ui",
		New: func() caddy.Module { return new(KeyPage) },
	}
}

// Provision renders the page for the configured API prefix.
func (p *KeyPage) Provision(caddy.Context) error {
	if p.APIPrefix == "" {
		p.APIPrefix = DefaultPathPrefix
	}
	p.APIPrefix = strings.TrimSuffix(p.APIPrefix, "/")
	page, err := uiFiles.ReadFile("ui/index.html")
	if err != nil {
		return err
	}
	p.index = bytes.Replace(page, []byte("{{API}}"), []byte(html.EscapeString(p.APIPrefix)), 1)
	return nil
}

// ServeHTTP answers GET and HEAD with the page or its assets, by the last
// path segment, so it works under any prefix.
func (p *KeyPage) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, nil)
	}
	body, contentType := p.index, "text/html; charset=utf-8"
	switch path.Base(r.URL.Path) {
	case "app.js":
		body, _ = uiFiles.ReadFile("ui/app.js")
		contentType = "text/javascript; charset=utf-8"
	case "style.css":
		body, _ = uiFiles.ReadFile("ui/style.css")
		contentType = "text/css; charset=utf-8"
	}
	h := w.Header()
	for k, v := range uiSecurityHeaders {
		h.Set(k, v)
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, err := w.Write(body)
		return err
	}
	return nil
}

// parseKeyPage sets up the page. Syntax:
//
//	apikeys_ui [<matcher>] {
//	    api_prefix <path>
//	}
func parseKeyPage(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	var p KeyPage
	for h.NextBlock(0) {
		switch h.Val() {
		case "api_prefix":
			if !h.AllArgs(&p.APIPrefix) {
				return nil, h.ArgErr()
			}
		default:
			return nil, h.Errf("unrecognized apikeys_ui option '%s'", h.Val())
		}
	}
	return &p, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*KeyPage)(nil)
	_ caddyhttp.MiddlewareHandler = (*KeyPage)(nil)
)
