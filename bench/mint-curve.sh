#!/usr/bin/env bash
# Minting as the store grows: wrk (64 connections over loopback, sharing
# the machine's cores with the gateway binary, as a user's load generator
# would) posts create_api_key until the store holds APIKEYS_MINT_KEYS keys
# (default 10^6), for bbolt and etcd (one member), with an HS256 JWT and
# with a configured user's password, and prints keys/s and the gateway's
# CPU time per key from an empty store to the last size (the medians of
# five 3 s windows at each size). See integration/mint_bench_test.go.
#
#   bench/mint-curve.sh                                  # all four setups, about 13 minutes
#   APIKEYS_MINT_SETUPS=bolt/jwt bench/mint-curve.sh     # one of them
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
go test ./integration -run '^$' -bench '^BenchmarkMintCurve$' -benchtime 1x -timeout 60m -v |
	grep -v '^=== \|^goos\|^goarch\|^pkg\|^cpu'
