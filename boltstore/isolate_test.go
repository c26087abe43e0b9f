package boltstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// flipped writes a copy of testdata/store-v1.db with one bit changed.
func flipped(t *testing.T, at, bit int) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "store-v1.db"))
	if err != nil {
		t.Fatal(err)
	}
	data[at] ^= 1 << bit
	p := filepath.Join(t.TempDir(), "apikeys.db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEveryPageHeaderFlipIsRefusedOrSound changes, one at a time, each
// bit of every page's header and first element: the 16 bytes bbolt
// trusts (page id, kind, element count, overflow) and the element that
// locates the first key. Each file is sound or refused as damaged, in
// bounded time, by the walk of the pages: none crashes or stalls the
// check (before the walk, 42 of these faulted bbolt's check and 25 sent
// it into a walk of billions of pages), and Open agrees.
func TestEveryPageHeaderFlipIsRefusedOrSound(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "store-v1.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func(f func(int64) time.Duration) { checkTimeout = f }(checkTimeout)
	checkTimeout = func(int64) time.Duration { return 5 * time.Second }
	dir := t.TempDir()
	damaged, sound, from, to, least := 0, 0, 0, 32, 500
	if testing.Short() {
		from, to, least = 8, 16, 120 // kind, count and overflow only
	}
	for page := 0; page*4096 < len(data); page++ {
		for b := from; b < to; b++ {
			for bit := range 8 {
				at := page*4096 + b
				d := bytes.Clone(data)
				d[at] ^= 1 << bit
				p := filepath.Join(dir, "apikeys.db")
				if err := os.WriteFile(p, d, 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := Check(p)
				var de *DamagedError
				switch {
				case err == nil:
					sound++
				case errors.As(err, &de) && (strings.Contains(de.Problem, "crashed") || strings.Contains(de.Problem, "did not finish")):
					t.Fatalf("byte %d bit %d: the check itself failed: %v", at, bit, err)
				case errors.As(err, &de):
					damaged++
				default:
					t.Fatalf("byte %d bit %d: not a verdict on the file: %v", at, bit, err)
				}
				if (at+bit)%16 != 0 {
					continue // Open checks the same way; a sample of it
				}
				s, openErr := Open(p, time.Second)
				if openErr == nil {
					_ = s.Close()
				}
				if (err == nil) != (openErr == nil) {
					t.Fatalf("byte %d bit %d: Check said %v, Open %v", at, bit, err, openErr)
				}
			}
		}
	}
	t.Logf("%d flips: %d refused as damaged, %d sound (free pages, key bytes that still sort)", damaged+sound, damaged, sound)
	if damaged < least {
		t.Fatalf("only %d flips refused: the sweep does not reach the headers", damaged)
	}
}

// TestCheckThatCrashesIsReportedNotFatal: left to bbolt alone (no walk of
// the pages first), a changed element count on a leaf makes bbolt's check
// read past the file's mapping, a fault no recover catches (a bounds
// panic in bbolt's goroutine, under the race detector). It happens in
// the checking process; the caller gets a DamagedError and carries on.
func TestCheckThatCrashesIsReportedNotFatal(t *testing.T) {
	p := flipped(t, 4*4096+23, 6) // page 4: its first key 1 GiB away
	_, err := checkIsolated(checkRequest{Path: p, LockTimeout: time.Second, TrustPages: true, PagesOnly: true})
	var de *DamagedError
	if !errors.As(err, &de) || !strings.Contains(de.Problem, "crashed the check") {
		t.Fatalf("got %v", err)
	}
	if de.Path != p || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("the message does not say which file and what to do: %v", err)
	}
	// With the walk, the same file is refused for what is wrong with it.
	if _, err := Check(p); !errors.As(err, &de) || !strings.Contains(de.Problem, "page 4: element 0 lies past the page") {
		t.Fatalf("Check: %v", err)
	}
}

// TestCheckThatDoesNotFinishIsReported: a page claiming 2²⁹ overflow
// pages sends bbolt's check, left alone, into a walk of them; the child
// is stopped at its time limit and the file is reported as damaged.
func TestCheckThatDoesNotFinishIsReported(t *testing.T) {
	defer func(f func(int64) time.Duration) { checkTimeout = f }(checkTimeout)
	checkTimeout = func(int64) time.Duration { return time.Second }
	p := flipped(t, 4*4096+15, 5) // page 4's overflow, high byte
	start := time.Now()
	_, err := checkIsolated(checkRequest{Path: p, LockTimeout: time.Second, TrustPages: true})
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "did not finish in 1s") {
		t.Fatalf("got %v", err)
	}
	t.Logf("stopped after %v", time.Since(start).Round(time.Millisecond))
	if _, err := Check(p); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "more pages, past its last page") {
		t.Fatalf("Check: %v", err)
	}
}

// TestCheckAnswersCrossTheProcess: what the child finds arrives as the
// same errors the caller would get in its own process.
func TestCheckAnswersCrossTheProcess(t *testing.T) {
	path, _ := filledStore(t)
	rep, err := Check(path)
	if err != nil || rep.Counts.Keys != 300 || rep.Path != path {
		t.Fatalf("%+v, %v", rep, err)
	}
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Check(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("a held file: %v", err)
	}
	if _, err := Check(filepath.Join(t.TempDir(), "none.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: %v", err)
	}
}

// FuzzWalkPages: the walk of a file's pages reads whatever the file holds
// without panicking or running away, and answers nil or a DamagedError.
func FuzzWalkPages(f *testing.F) {
	data, err := os.ReadFile(filepath.Join("testdata", "store-v1.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data, 4*4096+10, byte(8))
	f.Add(data, 5*4096+15, byte(0x20))
	f.Add(data, 3*4096+23, byte(0x40))
	f.Fuzz(func(t *testing.T, d []byte, at int, x byte) {
		if len(d) == 0 || at < 0 {
			return
		}
		d = bytes.Clone(d)
		d[at%len(d)] ^= x
		p := filepath.Join(t.TempDir(), "apikeys.db")
		if err := os.WriteFile(p, d, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := walkPages(p); err != nil && !errors.Is(err, ErrDamaged) {
			t.Fatalf("not a verdict on the file: %v", err)
		}
	})
}

// TestFileWithoutBucketsOpensAsANewStore: a bbolt file with no buckets is
// what an open cut short between creating the file and making the
// store's buckets leaves; it is a new store, not a damaged one.
func TestFileWithoutBucketsOpensAsANewStore(t *testing.T) {
	p := filepath.Join(t.TempDir(), "apikeys.db")
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if rep, err := Check(p); err != nil || !rep.Counts.Empty() {
		t.Fatalf("%+v, %v", rep, err)
	}
	s, err := Open(p, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if rep, err := Check(p); err != nil || rep.Schema != schemaVersion {
		t.Fatalf("after the open: %+v, %v", rep, err)
	}
}
