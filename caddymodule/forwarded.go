package caddymodule

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// How the verifier reads what a proxy says of the request it asks about.
// Proxies describe the client's request in header fields: Caddy's
// forward_auth and Traefik's forwardAuth set X-Forwarded-Method and
// X-Forwarded-Uri, nginx's auth_request configurations commonly set
// X-Original-Method and X-Original-URI; Envoy's HTTP ext_authz sends the
// client's method and path as the sub-request's own. These fields are
// read once each, strictly: a field given twice, the two names of one
// field disagreeing (a client may send the name its proxy does not set),
// or a URI that is not a path with an optional query, is refused with
// 400, never guessed at.

// maxForwardedURI is the longest forwarded URI read, in bytes (nginx's
// default for a request line is 8 KiB).
const maxForwardedURI = 8192

var errForwarded = errors.New("malformed forwarded request")

// forwardedField is the one value of the fields names in h, and whether
// any is present: errForwarded if a field repeats or two disagree.
func forwardedField(h http.Header, names ...string) (value string, seen bool, err error) {
	for _, name := range names {
		vs := h.Values(name)
		switch {
		case len(vs) == 0:
			continue
		case len(vs) > 1, seen && vs[0] != value:
			return "", false, errForwarded
		}
		value, seen = vs[0], true
	}
	return value, seen, nil
}

// parseForwardedURI splits a request target in origin form ("/path?query",
// as a client sent it) into its decoded path, its path as sent (when the
// decoding changed it) and its raw query.
func parseForwardedURI(uri string) (path, rawPath, rawQuery string, err error) {
	if len(uri) > maxForwardedURI || uri == "" || uri[0] != '/' || strings.HasPrefix(uri, "//") {
		return "", "", "", errForwarded
	}
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return "", "", "", errForwarded
		}
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil || u.Host != "" || u.Opaque != "" {
		return "", "", "", errForwarded
	}
	return u.Path, u.RawPath, u.RawQuery, nil
}

// validMethod reports whether m is an HTTP method token.
func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// parseCost reads a cost stated by the asking proxy: at most 10 decimal digits,
// 0 to maxCost.
func parseCost(s string) (int64, error) {
	if s == "" || len(s) > 10 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errBadCost
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxCost {
		return 0, errBadCost
	}
	return n, nil
}

// askedOver reads the request a proxy asks about from its HTTP
// sub-request r: the key's places are r's header fields and the query of
// the forwarded URI.
func askedOver(r *http.Request) (asked, error) {
	method, seen, err := forwardedField(r.Header, "X-Forwarded-Method", "X-Original-Method")
	if !seen {
		method = r.Method
	}
	if err != nil || !validMethod(method) {
		return asked{}, errForwarded
	}
	uri, seen, err := forwardedField(r.Header, "X-Forwarded-Uri", "X-Original-Uri")
	if err != nil {
		return asked{}, err
	}
	if !seen {
		// The sub-request's own target (Envoy's HTTP ext_authz), past
		// any handle_path that took the verifier's prefix off.
		uri = r.URL.RequestURI()
	}
	path, rawPath, rawQuery, err := parseForwardedURI(uri)
	if err != nil {
		return asked{}, err
	}
	return asked{header: r.Header, method: strings.ToUpper(method), path: path, rawPath: rawPath, rawQuery: rawQuery, ip: clientIP(r)}, nil
}
