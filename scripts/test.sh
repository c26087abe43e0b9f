#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with only Go on it:
# installs what the tests need (when run as root; otherwise prints the
# command to run), checks the versions that matter, then runs the quick
# gate (gofmt, go vet, staticcheck, short tests) and the full suite.
#
# The first run downloads modules and builds Caddy, etcd and Ory Hydra
# (README gives the times); later runs reuse Go's caches.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

say() { printf '== %s\n' "$*"; }
fail() {
	printf 'scripts/test.sh: %s\n' "$*" >&2
	exit 1
}

command -v go >/dev/null || fail "Go is not on PATH: install Go $(sed -n 's/^go //p' go.mod) or later from https://go.dev/dl"

# version_at_least HAVE WANT: dotted versions, numerically.
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
node_ok() { command -v node >/dev/null && version_at_least "$(node --version | tr -d v)" 18; }
curl_ok() { command -v curl >/dev/null && version_at_least "$(curl --version | awk 'NR==1 {print $2}')" 7.82; }
requests_ok() { python3 -c 'import requests' 2>/dev/null; }
browser_ok() { command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; }

# What each need is for: gcc for -race and Hydra's sqlite (cgo); Node.js
# >= 18 (global fetch), Python 3 with requests and curl >= 7.82 (--json)
# as the README's clients; Chromium for the key page.
packages=()
command -v gcc >/dev/null || packages+=(gcc libc6-dev)
curl_ok || packages+=(curl)
node_ok || packages+=(nodejs)
requests_ok || packages+=(python3 python3-requests)
browser_ok || packages+=(chromium)
if ((${#packages[@]})); then
	if [ "$(id -u)" != 0 ]; then
		fail "the tests need: ${packages[*]}. Install them, then run this again:
  sudo apt-get update && sudo apt-get install -y ${packages[*]}"
	fi
	say "installing ${packages[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
# Debian's python3 has requests; prefer it to a python3 earlier on PATH
# that lacks it.
if ! requests_ok && [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import requests' 2>/dev/null; then
	shim=$(mktemp -d)
	ln -s /usr/bin/python3 "$shim/python3"
	export PATH="$shim:$PATH"
fi
node_ok || fail "Node.js 18 or later is needed (found: $(node --version 2>/dev/null || echo none))"
curl_ok || fail "curl 7.82 or later is needed for --json (found: $(curl --version 2>/dev/null | head -n1 || echo none))"
requests_ok || fail "python3 with the requests package is needed"
go version

say "gofmt, go vet, staticcheck"
unformatted=$(gofmt -l .)
[ -z "$unformatted" ] || fail "not gofmt-formatted: $unformatted"
go vet ./...
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

say "quick tests: go test -short -race ./..."
go test -short -race -count=1 ./...

say "the whole suite: go test -race -count=1 ./..."
go test -race -count=1 ./...
