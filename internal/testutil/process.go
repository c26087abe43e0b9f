package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// stopGrace is how long Stop and End wait for a signalled process to exit
// before they kill it.
const stopGrace = 10 * time.Second

// Process is a server process a test started and owns (a gateway, nginx,
// Traefik, Hydra, an etcd member): it dies with the test process, is
// stopped when the test ends, and its output is logged if the test failed.
type Process struct {
	// Cmd is the started command; tests read its Process (a pid, a signal
	// of their own).
	Cmd *exec.Cmd

	name     string
	out      *Buffer // nil when the caller directed the output itself
	logs     []string
	done     chan struct{}
	stopOnce sync.Once
}

// StartProcess starts cmd as the process name and stops it when the test
// ends (see Stop). Unless cmd.Stdout or cmd.Stderr is set, its output is
// kept (Output); that output and the files logs, which the process
// writes, are logged if the test failed.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd, logs ...string) *Process {
	t.Helper()
	p, err := Start(name, cmd, logs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s", p.report())
		}
	})
	return p
}

// Start is StartProcess for a process whose owner stops it and reports
// on it itself: an etcd member, which outlives the subtest that restarts
// it.
func Start(name string, cmd *exec.Cmd, logs ...string) (*Process, error) {
	p := &Process{Cmd: cmd, name: name, logs: logs, done: make(chan struct{})}
	if cmd.Stdout == nil && cmd.Stderr == nil {
		p.out = new(Buffer)
		cmd.Stdout, cmd.Stderr = p.out, p.out
	}
	DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output is what the process wrote so far, if StartProcess kept it.
func (p *Process) Output() string {
	if p.out == nil {
		return ""
	}
	return p.out.String()
}

// Stop interrupts the process and waits for it to exit, killing it if it
// has not within 10 s. Only the first Stop or End signals.
func (p *Process) Stop() { p.End(os.Interrupt) }

// End is Stop with another signal (os.Kill: a crash).
func (p *Process) End(sig os.Signal) {
	p.stopOnce.Do(func() {
		_ = p.Cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
	})
}

// Ready polls cond as Eventually does, and fails the test with the
// process's output at once if the process exits first (a bad config)
// or if cond does not hold within limit.
func (p *Process) Ready(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	wait := 10 * time.Millisecond
	for !cond() {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s:\n%s", p.name, what, p.report())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v:\n%s", what, limit, p.report())
		}
		time.Sleep(wait)
		wait = min(wait*2, 200*time.Millisecond)
	}
}

// report is the process's output and the tails of its log files.
func (p *Process) report() string {
	var b strings.Builder
	b.WriteString(p.name + " output:\n" + p.Output())
	for _, name := range p.logs {
		log, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		if len(log) > 8000 {
			log = log[len(log)-8000:]
		}
		b.WriteString("\n" + name + " (tail):\n" + string(log))
	}
	return b.String()
}

// Buffer is a bytes.Buffer that a process's output and the test may use
// at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
