#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with only Go on it:
# installs what the tests need (when run as root; otherwise prints the
# command to run), checks the versions that matter, then runs three
# phases, each announced with what it does and how long it takes: the
# gate (gofmt, go vet, staticcheck), the quick tests (-short) and the
# whole suite, whose report ends with the tests that were skipped.
#
# The first run downloads modules and builds Caddy, etcd, Ory Hydra and
# Traefik (README gives the times); later runs reuse Go's caches.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
tmp=$(mktemp -d)
phase_name='' phase_start=''
trap 'status=$?
rm -rf "$tmp"
if [ "$status" != 0 ] && [ -n "$phase_name" ]; then
	printf "scripts/test.sh: %s failed after %s s\n" "$phase_name" $((SECONDS - phase_start)) >&2
fi' EXIT

say() { printf '== %s\n' "$*"; }
fail() {
	printf 'scripts/test.sh: %s\n' "$*" >&2
	exit 1
}

# phase TITLE LINE...: ends the phase before, saying how long it took,
# and announces the next: its title, then what it does and how long it
# takes here.
phase() {
	end_phase
	printf '\n== %s\n' "$1"
	phase_name=${1%%:*}
	shift
	printf '   %s\n' "$@"
	phase_start=$SECONDS
}
end_phase() {
	if [ -n "$phase_name" ]; then
		say "$phase_name: done in $((SECONDS - phase_start)) s"
	fi
	phase_name=''
}

command -v go >/dev/null || fail "Go is not on PATH: install Go $(sed -n 's/^go //p' go.mod) or later from https://go.dev/dl"

# version_at_least HAVE WANT: dotted versions, numerically.
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
node_ok() { command -v node >/dev/null && version_at_least "$(node --version | tr -d v)" 18; }
curl_ok() { command -v curl >/dev/null && version_at_least "$(curl --version | awk 'NR==1 {print $2}')" 7.82; }
requests_ok() { python3 -c 'import requests' 2>/dev/null; }
nginx_ok() { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }
browser_ok() { command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; }

# What each need is for: gcc for -race and Hydra's sqlite (cgo); Node.js
# >= 18 (global fetch), Python 3 with requests and curl >= 7.82 (--json)
# as the README's clients; Chromium for the key page; nginx-light (which
# has auth_request) as a proxy asking apikeys_verify.
packages=()
command -v gcc >/dev/null || packages+=(gcc libc6-dev)
curl_ok || packages+=(curl)
node_ok || packages+=(nodejs)
requests_ok || packages+=(python3 python3-requests)
browser_ok || packages+=(chromium)
nginx_ok || packages+=(nginx-light)
if ((${#packages[@]})); then
	if [ "$(id -u)" != 0 ]; then
		fail "the tests need: ${packages[*]}. Install them, then run this again:
  sudo apt-get update && sudo apt-get install -y ${packages[*]}"
	fi
	say "installing ${packages[*]}"
	apt-get update -qq
	# Packages with a service (nginx) must not start it: the tests run
	# their own, and a system one would take port 80.
	policy=/usr/sbin/policy-rc.d made_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
	if [ -n "$made_policy" ]; then rm -f "$policy"; fi
fi
# Debian's python3 has requests; prefer it to a python3 earlier on PATH
# that lacks it.
if ! requests_ok && [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import requests' 2>/dev/null; then
	mkdir "$tmp/shim"
	ln -s /usr/bin/python3 "$tmp/shim/python3"
	export PATH="$tmp/shim:$PATH"
fi
node_ok || fail "Node.js 18 or later is needed (found: $(node --version 2>/dev/null || echo none))"
curl_ok || fail "curl 7.82 or later is needed for --json (found: $(curl --version 2>/dev/null | head -n1 || echo none))"
requests_ok || fail "python3 with the requests package is needed"
go version

start=$SECONDS

phase "1/3 the gate: gofmt -l, go vet ./..., staticcheck ./..." \
	"Formatting and static checks of the whole tree, and the build of the report" \
	"phase 3 prints. About 15-30 s on 2 cores with warm Go caches (16 s measured);" \
	"a first run also downloads and builds staticcheck."
unformatted=$(gofmt -l .)
[ -z "$unformatted" ] || fail "not gofmt-formatted: $unformatted"
go vet ./...
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
go build -o "$tmp/testreport" ./internal/tools/testreport

phase "2/3 quick tests: go test -short -race -count=1 ./..." \
	"Unit and in-process tests of every package, without the real binary, etcd, Ory" \
	"Hydra and the browser; one line per package. About 1-2 minutes with warm caches" \
	"(76 s measured)."
go test -short -race -count=1 ./...

phase "3/3 the whole suite: go test -json -race -count=1 -timeout 30m ./..." \
	"Everything, also the gateway binary, etcd 3.7.3, Ory Hydra, headless Chromium," \
	"and nginx, a stock Caddy and Traefik 3.6.12 in front of the gateway, run on" \
	"loopback with curl, Python and Node clients. About 4-5 minutes with warm caches" \
	"(231 s measured); a first run builds those first (10-15 minutes for the whole" \
	"script, and about 10 more for Traefik, whose binary is then kept in" \
	"~/.cache/caddy-apikeys). One line per package as it finishes: ./integration" \
	"takes most of the time, so minutes may pass between lines. Failing tests'" \
	"output is printed in full, and the skipped tests are listed at the end."
# -timeout: a first run builds Traefik inside ./integration's test binary,
# which with the rest can take that package past go test's default 10 minutes.
go test -json -race -count=1 -timeout 30m ./... | "$tmp/testreport"
end_phase
say "all three phases passed in $((SECONDS - start)) s"
