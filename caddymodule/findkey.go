package caddymodule

import (
	"errors"
	"net/http"
	"strings"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// check finds and verifies the request's key, and strips it unless
// keep_credentials. A missing or refused key is refused (401, with the
// challenge set); so is a key the store could not look up, which is
// logged. With body, a body that cannot be read is refused first (see
// keyFromBody).
func (g *APIKeyGate) check(w http.ResponseWriter, r *http.Request) (*keystore.Key, error) {
	var inBody string
	if g.Body {
		var err error
		if inBody, err = g.keyFromBody(r); err != nil {
			return nil, err
		}
	}
	presented, at, conflict := g.findKey(r, inBody)
	if conflict {
		// Two places disagree: whichever the gateway checked, the upstream
		// might read the other.
		w.Header().Set("WWW-Authenticate", g.challenge+`, error="invalid_request"`)
		g.app.metrics.conflicting.Inc()
		return nil, refuse(http.StatusUnauthorized, msgTwoKeys)
	}
	if presented == "" {
		w.Header().Set("WWW-Authenticate", g.challenge)
		return nil, refuse(http.StatusUnauthorized, msgKeyRequired)
	}
	k, err := g.app.keyring.VerifyWithin(r.Context(), presented, g.app.unknownBudget, clientIP(r))
	if err != nil {
		w.Header().Set("WWW-Authenticate", g.challenge+`, error="invalid_token"`)
		if isRefusal(err) {
			g.app.metrics.countRefusal(err)
		} else {
			// The store cannot tell: refused, as a key it does not know.
			g.logger.Error("key store failure while checking a key", zapError(err))
		}
		return nil, refuse(http.StatusUnauthorized, msgKeyRequired)
	}
	g.app.metrics.valid.Inc()
	if !g.KeepCredentials {
		g.strip(r, at)
	}
	return k, nil
}

func isRefusal(err error) bool {
	return errors.Is(err, keystore.ErrMalformedKey) || errors.Is(err, keystore.ErrNotFound) ||
		errors.Is(err, keystore.ErrExpired) || errors.Is(err, keystore.ErrDisabled) ||
		errors.Is(err, keystore.ErrOrphaned) || errors.Is(err, keystore.ErrOverBudget)
}

// findKey returns the presented key and the places it was found, so that
// it can be removed from every one (a body is passed on as it came), given
// the key the body carried. Every place is read: a request that carries
// two different values, in two places or twice in one, is a conflict and
// carries no key. The usual request (one key in one place) costs no
// allocation.
func (g *APIKeyGate) findKey(r *http.Request, inBody string) (key string, at keyPlaces, conflict bool) {
	see := func(v string) bool {
		switch {
		case key == "":
			key = v
		case v != key:
			conflict = true
		}
		return !conflict
	}
	for _, v := range r.Header.Values("Authorization") {
		if tok, ok := bearerValue(v); ok {
			if !see(tok) {
				return "", keyPlaces{}, true
			}
			at.auth = true
		}
	}
	for i, name := range g.Headers {
		for _, v := range r.Header.Values(name) {
			if v = strings.TrimSpace(v); v != "" {
				if !see(v) {
					return "", keyPlaces{}, true
				}
				at.headers |= 1 << i
			}
		}
	}
	if g.QueryParam != "" {
		values, rest, ambiguous := queryParam(r.URL.RawQuery, g.QueryParam)
		if ambiguous {
			return "", keyPlaces{}, true
		}
		for _, v := range values {
			if !see(v) {
				return "", keyPlaces{}, true
			}
		}
		if len(values) > 0 {
			at.query, at.rest = true, rest
		}
	}
	if inBody != "" && !see(inBody) {
		return "", keyPlaces{}, true
	}
	return key, at, false
}

// keyPlaces are where a request carried its key.
type keyPlaces struct {
	auth    bool   // Authorization: Bearer
	headers uint64 // bit i: the gate's header i
	query   bool
	rest    string // the query without the key
}

// strip removes the key from every place it was found.
func (g *APIKeyGate) strip(r *http.Request, at keyPlaces) {
	if at.auth {
		r.Header.Del("Authorization")
	}
	for i, name := range g.Headers {
		if at.headers&(1<<i) != 0 {
			r.Header.Del(name)
		}
	}
	if at.query {
		r.URL.RawQuery = at.rest
		r.RequestURI = withQuery(r.RequestURI, at.rest)
	}
}

func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(strings.ToLower(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	return bearerValue(r.Header.Get("Authorization"))
}

// bearerValue returns the token of an Authorization value "Bearer <token>".
func bearerValue(auth string) (string, bool) {
	const scheme = "bearer "
	if len(auth) <= len(scheme) || !strings.EqualFold(auth[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(auth[len(scheme):])
	return tok, tok != ""
}
