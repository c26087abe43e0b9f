package boltstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// bbolt has no page checksums and trusts the page headers it reads: a
// damaged header can make its own check (Tx.Check) fault outside the
// goroutine that called it, or allocate without bound, and a fault there
// cannot be recovered. So every check of a file runs in a child process
// — this binary again, started with checkEnv set, which checks the file
// and prints what it found — and a child that crashes, runs out of memory
// or does not finish is reported as a damaged file, while the gateway or
// the command that asked carries on.

// checkEnv, set in a process's environment, makes it the checker of one
// file: the package's init checks it, prints a checkAnswer and exits,
// before the program's own main runs.
const checkEnv = "CADDY_APIKEYS_BOLTSTORE_CHECK"

// checkRequest is what the child is asked to check.
type checkRequest struct {
	// Path is the file.
	Path string `json:"path"`
	// PagesOnly asks for bbolt's check of the pages only, not of every
	// record.
	PagesOnly bool `json:"pages_only,omitempty"`
	// LockTimeout bounds the wait for the file's lock.
	LockTimeout time.Duration `json:"lock_timeout"`
	// TrustPages skips the walk of the pages before bbolt reads them
	// (walkPages), leaving the file to bbolt alone: only for the tests
	// that show what the child process guards against.
	TrustPages bool `json:"trust_pages,omitempty"`
}

// checkAnswer is what the child found, on its standard output.
type checkAnswer struct {
	Report Report `json:"report"`
	// Kind names the error, if any: "damaged", "newer", "locked",
	// "permission" or "other".
	Kind    string `json:"kind,omitempty"`
	Problem string `json:"problem,omitempty"` // a DamagedError's
	Version uint64 `json:"version,omitempty"` // a NewerError's
	Message string `json:"message,omitempty"` // any error's text
}

func init() {
	if v, ok := os.LookupEnv(checkEnv); ok {
		os.Exit(serveCheck(v))
	}
}

// serveCheck is the child's side: it checks the file it is asked to and
// prints the answer.
func serveCheck(request string) int {
	var req checkRequest
	if err := json.Unmarshal([]byte(request), &req); err != nil {
		fmt.Fprintln(os.Stderr, "bad check request:", err)
		return 2
	}
	if fi, err := os.Stat(req.Path); err == nil {
		limitMemory(fi.Size())
	}
	rep, err := checkHere(req)
	a := checkAnswer{Report: rep}
	var damaged *DamagedError
	var newer *NewerError
	switch {
	case err == nil:
	case errors.As(err, &damaged):
		a.Kind, a.Problem = "damaged", damaged.Problem
	case errors.As(err, &newer):
		a.Kind, a.Version = "newer", newer.Version
	case errors.Is(err, ErrLocked):
		a.Kind = "locked"
	case errors.Is(err, os.ErrPermission):
		a.Kind = "permission"
	default:
		a.Kind = "other"
	}
	if err != nil {
		a.Message = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(a); err != nil {
		return 2
	}
	return 0
}

// checkTimeout bounds a child's check of a file of size bytes: several
// times what a sound file needs on this project's test machine from a
// cold cache (8–13 s at 10⁶ keys, 389 MB; about 1 s from the page cache),
// so that a check that does not finish is a damaged file's endless walk.
// A variable for tests.
var checkTimeout = func(size int64) time.Duration {
	return 10*time.Second + time.Duration(size>>23)*time.Second
}

// checkIsolated checks a file in a child process (see checkEnv). Where
// no child can be started it checks in this one.
func checkIsolated(req checkRequest) (Report, error) {
	fi, err := os.Stat(req.Path)
	if err != nil {
		return Report{Path: req.Path}, err
	}
	exe, err := executable()
	if err != nil {
		return checkHere(req)
	}
	arg, err := json.Marshal(req)
	if err != nil {
		return Report{}, err
	}
	limit := checkTimeout(fi.Size())
	ctx, cancel := context.WithTimeout(context.Background(), limit+req.LockTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(append(os.Environ(), childEnv()...), checkEnv+"="+string(arg))
	var stdout bytes.Buffer
	stderr := &headBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		return checkHere(req)
	}
	runErr := cmd.Wait()
	var a checkAnswer
	if runErr == nil && json.Unmarshal(stdout.Bytes(), &a) == nil {
		return a.Report, a.err(req.Path)
	}
	r := Report{Path: req.Path, Size: fi.Size()}
	switch {
	case ctx.Err() != nil:
		return r, &DamagedError{Path: req.Path, Problem: fmt.Sprintf("checking it did not finish in %s", limit)}
	case crashed(runErr):
		return r, &DamagedError{Path: req.Path, Problem: "reading it crashed the check: " + stderr.crash()}
	}
	return r, fmt.Errorf("checking %s: the checking process failed (%v): %s", req.Path, runErr, stderr.crash())
}

// err rebuilds the child's error on this side.
func (a checkAnswer) err(path string) error {
	switch a.Kind {
	case "":
		return nil
	case "damaged":
		return &DamagedError{Path: path, Problem: a.Problem}
	case "newer":
		return &NewerError{Version: a.Version}
	case "locked":
		return &childError{msg: a.Message, is: ErrLocked}
	case "permission":
		return &childError{msg: a.Message, is: os.ErrPermission}
	}
	return &childError{msg: a.Message}
}

// childError is an error the checking process reported.
type childError struct {
	msg string
	is  error
}

func (e *childError) Error() string { return e.msg }

// Is matches the sentinel the child's error matched.
func (e *childError) Is(target error) bool { return e.is != nil && target == e.is }

// crashed says whether a child ended the way Go ends a program that
// faulted, panicked or ran out of memory (exit status 2), as opposed to
// being stopped from outside (a signal).
func crashed(err error) bool {
	var exit *exec.ExitError
	return errors.As(err, &exit) && exit.ExitCode() == 2
}

// executable is the path that starts this program again; on Linux one
// that does so even when the file was replaced since (an upgrade).
func executable() (string, error) {
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/self/exe"); err == nil {
			return "/proc/self/exe", nil
		}
	}
	return os.Executable()
}

// headBuffer keeps the first max bytes written to it: where a crashing
// Go program says why.
type headBuffer struct {
	buf bytes.Buffer
	max int
}

func (t *headBuffer) Write(p []byte) (int, error) {
	if room := t.max - t.buf.Len(); room > 0 {
		t.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// crash is the line in which Go said why the program stopped.
func (t *headBuffer) crash() string {
	lines := strings.Split(t.buf.String(), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") || strings.HasPrefix(l, "unexpected fault address") {
			return strings.TrimSpace(l)
		}
	}
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return "no message"
}

var _ io.Writer = (*headBuffer)(nil)
