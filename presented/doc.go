// Package presented finds the API key a request presents, wherever it may
// be: "Authorization: Bearer", configured header fields, a query
// parameter, a QueryLake-style JSON body. Every place is read, and read
// once (a body by the strict reader): a request that carries two
// different keys, or a body that cannot be read in full, carries none,
// since whichever the gateway checked, the upstream might read the other.
// It also removes the key from every place it was found before the
// request goes upstream. It has no dependency on Caddy.
package presented
