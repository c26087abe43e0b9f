//go:build race

package boltstore

import "os"

// childEnv is what the checking process gets in its environment beyond
// this one's: a race-detector build waits a second at exit unless told
// not to, which made every check take a second in the tests.
func childEnv() []string {
	opts := "atexit_sleep_ms=0"
	if v := os.Getenv("GORACE"); v != "" {
		opts = v + " " + opts
	}
	return []string{"GORACE=" + opts}
}
