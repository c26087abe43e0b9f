//go:build !linux

package testutil

import "os/exec"

// DieWithParent does nothing here: only Linux kills a child when its
// parent dies (the tests' servers are stopped by their cleanups).
func DieWithParent(cmd *exec.Cmd) {}
