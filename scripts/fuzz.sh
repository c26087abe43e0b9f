#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 60s) and prints a
# summary. Plain `go test ./...` (and CI) runs only their seed corpora.
#
#   scripts/fuzz.sh              # 60s per target
#   FUZZTIME=10m scripts/fuzz.sh
#
# New crashers are written by Go under the package's testdata/fuzz/ and
# make the run fail; commit them so that they stay regression tests.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
fuzztime=${FUZZTIME:-60s}
targets=(
	"./identity FuzzDecodeAuth"
	"./identity FuzzJWTVerify"
	"./keystore FuzzParseKey"
	"./keystore FuzzDecodeKey"
	"./etcdstore FuzzDecodeRecord"
	"./caddymodule FuzzDecodeRequestBody"
	"./caddymodule FuzzBearerToken"
	"./caddymodule FuzzQueryParam"
	"./caddymodule FuzzKeyInBody"
	"./caddymodule FuzzDuplicateMember"
	"./caddymodule FuzzJSONSafe"
	"./leaks FuzzParseAlerts"
	"./leaks FuzzVerify"
	"./leaks FuzzScanKeys"
	"./notify FuzzVerify"
)
failed=0
summary=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "== $name ($pkg) for $fuzztime"
	start=$(date +%s)
	out=$(go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" 2>&1)
	rc=$?
	secs=$(($(date +%s) - start))
	execs=$(grep -oE 'execs: [0-9]+' <<<"$out" | tail -1 | grep -oE '[0-9]+')
	if [ $rc -eq 0 ]; then
		summary+=("ok    $name: ${secs}s, ${execs:-?} executions")
	else
		failed=1
		summary+=("FAIL  $name: ${secs}s")
		echo "$out" | tail -30
	fi
done
echo
printf '%s\n' "${summary[@]}"
exit $failed
