package caddymodule

import (
	"strings"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// userPlaceholderPrefix prefixes the placeholders of a verified key, as
// Caddy's authentication handler names those of its user.
const userPlaceholderPrefix = "http.auth.user."

// keyPlaceholders is what a verified key tells Caddy: the placeholders
// that the gate sets. They are built once per cached key (a keystore.Memo, of a pointer, which costs a
// request less to read than a struct) and shared by every request
// presenting it, so that none copies them.
type keyPlaceholders struct {
	// list holds the placeholders, prefixed: the owner's name (".id"),
	// "key_id", "key_title", "source" (the owner's source) and, if it has
	// any, "key_scopes" (space separated).
	list []placeholder
	// lookup answers the names in list, for replacers that ask only when
	// a placeholder is used.
	lookup func(name string) (any, bool)
}

// placeholdersOf holds each cached key's keyPlaceholders.
var placeholdersOf = keystore.NewMemo(newKeyPlaceholders)

// keyPlaceholderFunc returns the function that answers k's placeholders.
func keyPlaceholderFunc(k *keystore.Key) func(name string) (any, bool) {
	return placeholdersOf.Of(k).lookup
}

// placeholder is a named value of a verified key, ready to be answered:
// value holds a string already, so answering with it allocates nothing
// per request.
type placeholder struct {
	name  string
	value any
}

func newKeyPlaceholders(k *keystore.Key) *keyPlaceholders {
	meta := map[string]string{"key_id": k.ID, "key_title": k.Title, "source": k.Owner.Source}
	if len(k.Scopes) > 0 { // each one costs a placeholder per request
		meta["key_scopes"] = strings.Join(k.Scopes, " ")
	}
	list := make([]placeholder, 0, len(meta)+1)
	list = append(list, placeholder{userPlaceholderPrefix + "id", k.Owner.Name})
	for name, value := range meta {
		list = append(list, placeholder{userPlaceholderPrefix + name, value})
	}
	return &keyPlaceholders{list: list, lookup: func(name string) (any, bool) {
		for _, p := range list {
			if p.name == name {
				return p.value, true
			}
		}
		return nil, false
	}}
}
