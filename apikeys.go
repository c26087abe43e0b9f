// Package apikeys plugs caddy-apikeys into Caddy. Import it for its side
// effects, as xcaddy does:
//
//	import _ "github.com/caddy-apikeys/caddy-apikeys"
//
// The Caddy modules live in package caddymodule, the `caddy apikeys`
// command in package cli; the rules in packages keystore (keys, owners,
// plans), identity (who a caller is) and ops (the operator's operations).
package apikeys

import (
	_ "github.com/caddy-apikeys/caddy-apikeys/caddymodule"
	_ "github.com/caddy-apikeys/caddy-apikeys/cli"
)
