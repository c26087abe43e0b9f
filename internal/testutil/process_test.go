package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestProcess(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, sig := range []os.Signal{os.Interrupt, os.Kill} {
		t.Run(sig.String(), func(t *testing.T) {
			p := StartProcess(t, "sh", exec.Command(sh, "-c", "echo ready; exec sleep 60"))
			p.Ready(t, 10*time.Second, "its output", func() bool { return strings.Contains(p.Output(), "ready") })
			p.End(sig)
			select {
			case <-p.Done():
			default:
				t.Fatal("End returned before the process exited")
			}
			p.Stop() // after End, does nothing (the cleanup's Stop too)
		})
	}
}
