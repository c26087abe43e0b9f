#!/usr/bin/env bash
# The gateway benchmark: installs what it needs (wrk, nginx), builds the
# gateway, and runs bench/driver, which loads 10^3 and 10^6 keys through the
# store API, measures the same proxied route with and without apikey_auth,
# Caddy's basic_auth, nginx with a static key map and nginx asking the
# gateway's apikeys_verify by auth_request (alternating, several rounds), minting throughput, footprint and the Go benchmarks, and writes
# bench/results/latest.md and bench/results/ratios.svg.
#
#   bench/run.sh [--duration 5s] [--rounds 5] [--big 1000000]
#
# Everything listens on loopback, every run is bounded, and all servers
# are stopped at the end. Takes about 6 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if ((${#missing[@]})); then
	echo "== installing ${missing[*]}"
	if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
echo "== building the gateway and the bench tools"
go build -o "$bin/caddy" ./cmd/caddy
go build -o "$bin/loadkeys" ./bench/loadkeys
go build -o "$bin/driver" ./bench/driver

"$bin/driver" -caddy "$bin/caddy" -loadkeys "$bin/loadkeys" -nginx "$nginx_bin" -out bench/results -repo . "$@"
