package testutil

import (
	"os/exec"
	"syscall"
)

// DieWithParent has cmd's process killed when the test process that
// starts it dies, also without running its cleanups (a test binary's
// timeout panics and exits): a server a test started then does not live
// on holding its ports, its files, or an inherited lock on them.
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
