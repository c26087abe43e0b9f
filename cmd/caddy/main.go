// Command caddy is Caddy with its standard modules and caddy-apikeys, so
// that `go build ./cmd/caddy` gives the same binary as xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-apikeys/caddy-apikeys"
)

func main() {
	caddycmd.Main()
}
