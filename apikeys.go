// Package apikeys plugs caddy-apikeys into Caddy. Import it for its side
// effects, as xcaddy does:
//
//	import _ "github.com/caddy-apikeys/caddy-apikeys"
//
// The modules themselves live in package caddymodule; key storage and
// credential checks in packages keystore and identity.
package apikeys

import _ "github.com/caddy-apikeys/caddy-apikeys/caddymodule"
