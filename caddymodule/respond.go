package caddymodule

import (
	"net/http"

	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// writeError writes the API's error envelope with status and msg.
func writeError(w http.ResponseWriter, status int, msg string) error {
	return wire.WriteError(w, wire.Fail(status, msg))
}
