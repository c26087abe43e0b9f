// Command testreport reads the events of `go test -json` on its standard
// input and prints what a long run needs to show a person, as it goes:
//
//   - each package's ok, FAIL or "no test files" line when the package
//     finishes, as go test prints it without -json;
//   - the whole output of every test that fails, when it fails, and of
//     a package that fails outside any test (a panic, a timeout, a
//     build error);
//   - at the end, the tests that were skipped, each with the reason it
//     gave (go test shows skipped tests only with -v), and a count.
//
// It exits 1 when a test, a package or a build failed, or when the input
// ended before every package it saw had finished, so that
//
//	set -o pipefail
//	go test -json -race -count=1 ./... | testreport
//
// fails exactly when go test fails, and also when go test died midway.
// Lines that are not JSON events are printed as they are.
package main

import (
	"fmt"
	"os"
)

func main() {
	r := newReport(os.Stdout)
	if err := r.read(os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
	if !r.finish() {
		os.Exit(1)
	}
}
