package presented

import (
	"net/http"
	"slices"
	"strings"
)

// Places are where requests may present a key, besides "Authorization:
// Bearer", which is always read.
type Places struct {
	// Headers are header fields whose whole value is the key, in
	// canonical form (http.CanonicalHeaderKey); at most 64.
	Headers []string
	// QueryParam, if set, names a query parameter that carries the key.
	QueryParam string
	// Body says to read {"auth": {"api_key": …}} from JSON bodies.
	Body bool
	// MaxBodyBytes bounds the body read when Body is set.
	MaxBodyBytes int64
}

// Found is the key a request presented and where, so that Strip can
// remove it from every place.
type Found struct {
	// Key is the key presented, or "" for none.
	Key     string
	auth    bool   // Authorization: Bearer
	headers uint64 // bit i: Places.Headers[i]
	query   bool
	rest    string // the query without the key
}

// Find returns the key r presents. Every place is read: a request that
// carries two different values, in two places or twice in one, is refused
// with ErrTwoKeys; with Body, a body that cannot be read in full as a
// JSON object is refused with a *BodyError, never passed on unread (see
// Places.keyInBody). The body is put back so that the upstream receives
// it as it came. The usual request (one key in one place) costs no
// allocation.
func (p *Places) Find(r *http.Request) (Found, error) {
	var f Found
	var inBody string
	if p.Body {
		var err error
		if inBody, err = p.keyFromBody(r); err != nil {
			return Found{}, err
		}
	}
	conflict := false
	see := func(v string) bool {
		switch {
		case f.Key == "":
			f.Key = v
		case v != f.Key:
			conflict = true
		}
		return !conflict
	}
	for _, v := range r.Header.Values("Authorization") {
		if tok, ok := Bearer(v); ok {
			if !see(tok) {
				return Found{}, ErrTwoKeys
			}
			f.auth = true
		}
	}
	for i, name := range p.Headers {
		for _, v := range r.Header.Values(name) {
			if v = strings.TrimSpace(v); v != "" {
				if !see(v) {
					return Found{}, ErrTwoKeys
				}
				f.headers |= 1 << i
			}
		}
	}
	if p.QueryParam != "" {
		values, rest, ambiguous := queryParam(r.URL.RawQuery, p.QueryParam)
		if ambiguous {
			return Found{}, ErrTwoKeys
		}
		for _, v := range values {
			if !see(v) {
				return Found{}, ErrTwoKeys
			}
		}
		if len(values) > 0 {
			f.query, f.rest = true, rest
		}
	}
	if inBody != "" && !see(inBody) {
		return Found{}, ErrTwoKeys
	}
	return f, nil
}

// ReadsHeader reports whether Find reads a key from the header field
// name (canonical): Authorization, or one of Headers.
func (p *Places) ReadsHeader(name string) bool {
	return name == "Authorization" || slices.Contains(p.Headers, name)
}

// Strip removes f's key from every place r carried it (a body is passed
// on as it came).
func (p *Places) Strip(r *http.Request, f Found) {
	if f.auth {
		r.Header.Del("Authorization")
	}
	for i, name := range p.Headers {
		if f.headers&(1<<i) != 0 {
			r.Header.Del(name)
		}
	}
	if f.query {
		r.URL.RawQuery = f.rest
		r.RequestURI = withQuery(r.RequestURI, f.rest)
	}
}

// IsJSON reports whether a Content-Type is JSON: application/json or
// any +json type.
func IsJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(strings.ToLower(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// Bearer returns the token of an Authorization value "Bearer <token>".
func Bearer(auth string) (string, bool) {
	const scheme = "bearer "
	if len(auth) <= len(scheme) || !strings.EqualFold(auth[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(auth[len(scheme):])
	return tok, tok != ""
}
