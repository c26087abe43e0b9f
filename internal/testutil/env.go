package testutil

import (
	"os"
	"strconv"
	"testing"
)

// EnvInt is the positive integer in the environment variable name, or def
// if it is unset; anything else fails the test. Benchmarks read their sizes
// this way.
func EnvInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
