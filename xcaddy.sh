#!/usr/bin/env bash
# Builds a custom caddy with this plugin using xcaddy, the way users of
# published Caddy plugins do. Extra arguments go to `xcaddy build`, e.g.
#   ./xcaddy.sh --with github.com/mholt/caddy-ratelimit
# The binary is written to ./caddy. The plugin's version is the zero
# pseudo-version: it is taken from this directory, never downloaded.
set -euo pipefail
cd "$(dirname "$0")"
: "${CADDY_VERSION:=v2.11.9}"
export CADDY_VERSION
exec go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build "$CADDY_VERSION" \
	--with github.com/caddy-apikeys/caddy-apikeys@v0.0.0-00010101000000-000000000000=. \
	--output ./caddy "$@"
