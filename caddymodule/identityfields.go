package caddymodule

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// The header fields by which a verifier tells the asking proxy who the
// key's owner is, for the proxy to copy upstream. Their values are those
// of apikey_auth's placeholders: owner names are UTF-8 without control
// characters (keystore.CheckName), sources and scopes printable ASCII. The
// key itself is never in them.
const (
	// FieldUser is the key's owner's name ({http.auth.user.id}).
	FieldUser = "X-Apikeys-User"
	// FieldSource is where that name comes from: "password", "service"
	// or a token issuer's namespace ({http.auth.user.source}).
	FieldSource = "X-Apikeys-Source"
	// FieldKeyID is the key's id ({http.auth.user.key_id}).
	FieldKeyID = "X-Apikeys-Key-Id"
	// FieldScopes are the key's scopes, separated by spaces; absent for
	// a key without scopes ({http.auth.user.key_scopes}).
	FieldScopes = "X-Apikeys-Scopes"
	// FieldRateLimitRemaining is what is left of the most restrictive of
	// the key's limits, for a key with a plan
	// ({http.auth.user.ratelimit_remaining}).
	FieldRateLimitRemaining = "X-Apikeys-Ratelimit-Remaining"
	// FieldCreditsRemaining is the credits left, for a plan with credits
	// ({http.auth.user.credits_remaining}).
	FieldCreditsRemaining = "X-Apikeys-Credits-Remaining"
)

// identityFieldNames are the fields writeIdentity may set.
var identityFieldNames = []string{FieldUser, FieldSource, FieldKeyID, FieldScopes, FieldRateLimitRemaining, FieldCreditsRemaining}

// identityFields are a key's fields that do not change between requests,
// built once per cached key.
type identityFields struct {
	names  []string
	values [][]string // shared: len = cap, so an append copies
}

var identityOf = keystore.NewMemo(func(k *keystore.Key) *identityFields {
	f := &identityFields{}
	add := func(name, value string) {
		f.names = append(f.names, name)
		f.values = append(f.values, []string{value})
	}
	add(FieldUser, k.Owner.Name)
	add(FieldSource, k.Owner.Source)
	add(FieldKeyID, k.ID)
	if len(k.Scopes) > 0 {
		add(FieldScopes, strings.Join(k.Scopes, " "))
	}
	return f
})

// writeIdentity sets the identity fields of an admitted key on h,
// replacing any there.
func writeIdentity(h http.Header, a admitted) {
	f := identityOf.Of(a.key)
	for i, name := range f.names {
		h[name] = f.values[i]
	}
	if a.key.Limits() == nil {
		return
	}
	if a.verdict.Remaining >= 0 {
		h[FieldRateLimitRemaining] = []string{strconv.FormatInt(a.verdict.Remaining, 10)}
	}
	if a.verdict.Credits >= 0 {
		h[FieldCreditsRemaining] = []string{strconv.FormatInt(a.verdict.Credits, 10)}
	}
}
