#!/usr/bin/env bash
# Minting as the store grows: wrk (64 connections over loopback, sharing
# the machine's cores with the gateway binary, as a user's load generator
# would) posts create_api_key until the store holds APIKEYS_MINT_KEYS keys
# (default 10^6), for bbolt and etcd (one member), with an HS256 JWT and
# with a configured user's password, and prints keys/s and the gateway's
# CPU time per key from an empty store to the last size (the medians of
# five 3 s windows at each size). Each round of windows also mints into
# an empty store, and into a store of the same size through the gateway
# built from APIKEYS_MINT_BASE (default 6da0823, the last revision before
# minting was tuned; "none" to skip it), so that each row compares runs
# taken minutes apart at most. See integration/mint_bench_test.go.
#
#   bench/mint-curve.sh                                  # all four setups, about 50 minutes
#   APIKEYS_MINT_SETUPS=bolt/jwt bench/mint-curve.sh     # one of them: 6 minutes (bolt), 17 (etcd)
#   APIKEYS_MINT_MEMBERS=3 APIKEYS_MINT_SETUPS=etcd/jwt bench/mint-curve.sh   # etcd of three members
#
# With the argument "ratio", it mints instead into bbolt and into a
# three-member etcd cluster (APIKEYS_MINT_MEMBERS), alternating 3 s windows
# for APIKEYS_MINT_ROUNDS rounds (default 7), and prints both rates, their
# ratio, CPU per key and etcd's fsyncs (integration/mint_ratio_bench_test.go):
#
#   bench/mint-curve.sh ratio                            # about 1 minute
#
# Everything listens on loopback and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
if ! command -v wrk >/dev/null; then
	echo "== installing wrk"
	if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi
if [ "${1:-}" = ratio ]; then
	go test ./integration -run '^$' -bench '^BenchmarkMintEtcdAgainstBolt$' -benchtime 1x -timeout 30m -v |
		grep -v '^=== \|^goos\|^goarch\|^pkg\|^cpu'
	exit
fi
base=${APIKEYS_MINT_BASE:-6da0823}
if [ "$base" != none ]; then
	work=$(mktemp -d)
	trap 'git worktree remove --force "$work/src" 2>/dev/null || true; rm -rf "$work"' EXIT
	echo "== building the gateway at $base to compare with"
	git worktree add --quiet --detach "$work/src" "$base"
	(cd "$work/src" && go build -o "$work/caddy" ./cmd/caddy)
	export APIKEYS_MINT_BASELINE="$work/caddy" APIKEYS_MINT_BASELINE_NAME="$base"
fi
go test ./integration -run '^$' -bench '^BenchmarkMintCurve$' -benchtime 1x -timeout 90m -v |
	grep -v '^=== \|^goos\|^goarch\|^pkg\|^cpu'
