// Package integration holds end-to-end tests: Caddy run in-process by
// caddytest (all such tests live here, in one package, and never run in
// parallel: they share one server with its admin API on localhost:2999),
// and tests that build the real binary and drive it with real clients.
package integration
