package caddymodule

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// FuzzForwardedURI: a forwarded URI is taken only as a path with an
// optional query, in printable ASCII, and is then read as Go's HTTP server
// reads a request target; the query is the text after the first '?' as
// sent, so the key found in it is the one the client sent.
func FuzzForwardedURI(f *testing.F) {
	for _, s := range []string{"/", "/v1/x?a=1&api_key=sk-1", "//evil/x", "http://evil/", "/a%2Fb", "/a b", "/x#frag", "*", "", "/%zz", "/a?b?c", "/\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		path, rawPath, rawQuery, err := parseForwardedURI(uri)
		if err != nil {
			return
		}
		if !strings.HasPrefix(uri, "/") || strings.HasPrefix(uri, "//") || len(uri) > maxForwardedURI {
			t.Fatalf("%q taken", uri)
		}
		for i := 0; i < len(uri); i++ {
			if uri[i] <= ' ' || uri[i] >= 0x7f || uri[i] == '#' {
				t.Fatalf("%q taken with byte %#x", uri, uri[i])
			}
		}
		_, wantQuery, _ := strings.Cut(uri, "?")
		if rawQuery != wantQuery {
			t.Fatalf("%q: query %q, want %q", uri, rawQuery, wantQuery)
		}
		u, err := url.ParseRequestURI(uri)
		if err != nil || u.Path != path || u.RawPath != rawPath {
			t.Fatalf("%q: path %q %q; net/url says %v %v", uri, path, rawPath, u, err)
		}
	})
}

// FuzzParseCost: a stated cost is at most 10 decimal digits, from 0 to maxCost,
// and is read as its number.
func FuzzParseCost(f *testing.F) {
	for _, s := range []string{"0", "3", "1000000000", "1000000001", "-1", "+1", " 1", "1e3", "0x10", "007", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseCost(s)
		want, werr := strconv.ParseUint(s, 10, 64)
		ok := werr == nil && want <= maxCost && len(s) <= 10
		if (err == nil) != ok || (ok && uint64(n) != want) {
			t.Fatalf("%q: %d %v; strconv says %d %v", s, n, err, want, werr)
		}
	})
}

// FuzzAskedOver: whatever fields a sub-request carries, a forwarded
// request is read only when each field is given at most once and both
// names of a field agree, and what is read is what they said.
func FuzzAskedOver(f *testing.F) {
	f.Add("GET", "", "/v1/x", "", 0)
	f.Add("get", "POST", "/v1/x?k=1", "/v1/y", 1)
	f.Add("", "", "", "/v1/x", 2)
	f.Fuzz(func(t *testing.T, fwdMethod, origMethod, fwdURI, origURI string, repeat int) {
		r, err := http.NewRequest(http.MethodGet, "http://gw/verify", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.RequestURI = "/verify"
		set := func(name, v string) {
			if v != "" {
				r.Header[name] = []string{v}
				if repeat&1 != 0 && name == "X-Forwarded-Uri" || repeat&2 != 0 && name == "X-Forwarded-Method" {
					r.Header[name] = append(r.Header[name], v)
				}
			}
		}
		set("X-Forwarded-Method", fwdMethod)
		set("X-Original-Method", origMethod)
		set("X-Forwarded-Uri", fwdURI)
		set("X-Original-Uri", origURI)
		q, err := askedOver(r)
		if err != nil {
			return
		}
		if repeat&1 != 0 && fwdURI != "" || repeat&2 != 0 && fwdMethod != "" {
			t.Fatal("a repeated field was read")
		}
		if fwdURI != "" && origURI != "" && fwdURI != origURI || fwdMethod != "" && origMethod != "" && fwdMethod != origMethod {
			t.Fatal("disagreeing fields were read")
		}
		uri := fwdURI + origURI
		if fwdURI != "" {
			uri = fwdURI
		}
		if uri == "" {
			uri = "/verify"
		}
		path, _, rawQuery, _ := parseForwardedURI(uri)
		if q.path != path || q.rawQuery != rawQuery {
			t.Fatalf("read %q %q from %q", q.path, q.rawQuery, uri)
		}
		m := fwdMethod + origMethod
		if fwdMethod != "" {
			m = fwdMethod
		}
		if m == "" {
			m = "GET"
		}
		if q.method != strings.ToUpper(m) || !validMethod(m) {
			t.Fatalf("method %q read from %q", q.method, m)
		}
	})
}
