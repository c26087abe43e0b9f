package main

import (
	"os"
	"strings"
	"testing"
)

// The testdata streams are `go test -json ./...` of a small module (paths
// shortened): failing.jsonl has a passing, a failing, a panicking, an
// exiting and a skipping test, subtests, a package without tests and one
// that does not build; passing.jsonl passes with a test skipped in -short.

func run(t *testing.T, input string) (string, bool) {
	t.Helper()
	var out strings.Builder
	r := newReport(&out)
	if err := r.read(strings.NewReader(input)); err != nil {
		t.Fatal(err)
	}
	ok := r.finish()
	return out.String(), ok
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// inOrder fails unless every one of want appears in out, in this order.
func inOrder(t *testing.T, out string, want ...string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("%q missing (or out of order) in:\n%s", w, out)
		}
		rest = rest[i+len(w):]
	}
}

func TestFailingRun(t *testing.T) {
	out, ok := run(t, testdata(t, "failing.jsonl"))
	if ok {
		t.Fatalf("a run with failures passed:\n%s", out)
	}
	// Each package's line as it finished, failing tests' output in full
	// before their package's line.
	inOrder(t, out,
		"=== FAIL fx/a TestFail", "printed\n", "a_test.go:8: boom", "a_test.go:8: more", "--- FAIL: TestFail",
		"=== FAIL fx/a TestSub/bad", "a_test.go:11: sub broke",
		"FAIL\tfx/a\t",
	)
	inOrder(t, out, "=== FAIL fx/c TestPanics", "panic: assignment to entry in nil map", "c_test.go:5", "FAIL\tfx/c\t")
	inOrder(t, out, "e/e_test.go:5:32: undefined: undefined", "FAIL\tfx/e [build failed]")
	inOrder(t, out, "=== FAIL fx/f TestExits did not finish", "f_test.go:5: leaving", "FAIL\tfx/f\t")
	for _, line := range []string{"ok  \tfx/b\t(cached)\n", "?   \tfx/d\t[no test files]\n", "ok  \tfx/g\t"} {
		if !strings.Contains(out, line) {
			t.Errorf("no %q line:\n%s", line, out)
		}
	}
	// The skipped tests at the end, with their reasons.
	inOrder(t, out, "FAIL\tfx/f", "Skipped tests",
		"fx/a TestSkip: a_test.go:6: needs chromium\n",
		"fx/a TestSkipf: a_test.go:7: no etcd here\n",
		"fx/a TestSub/skipped: a_test.go:12: not on this OS\n",
		"FAIL: 3 packages passed, 4 failed, 1 builds failed; 4 tests failed, 3 skipped\n")
	// Passing tests and go test's own markers are not repeated.
	for _, noise := range []string{"quiet", "=== RUN", "--- PASS", "TestAfter", "TestOK"} {
		if strings.Contains(out, noise) {
			t.Errorf("the report shows %q:\n%s", noise, out)
		}
	}
}

func TestPassingRun(t *testing.T) {
	out, ok := run(t, testdata(t, "passing.jsonl"))
	if !ok {
		t.Fatalf("a passing run failed:\n%s", out)
	}
	want := "?   \tfx/d\t[no test files]\nok  \tfx/b\t0.006s\n\n" +
		"Skipped tests (go test lists them only with -v):\n  fx/b TestSkip: b_test.go:6: short\n\n" +
		"PASS: 2 packages passed, 0 failed; 0 tests failed, 1 skipped\n"
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
}

// A stream that ends before its packages finish (go test killed) fails,
// and shows what was running.
func TestCutShortRun(t *testing.T) {
	var kept []string
	for _, l := range strings.SplitAfter(testdata(t, "failing.jsonl"), "\n") {
		if strings.Contains(l, `"Package":"fx/f"`) && strings.Contains(l, `"Action":"fail"`) {
			break
		}
		if strings.Contains(l, `"Package":"fx/f"`) && strings.Contains(l, "FAIL\\tfx/f") {
			continue
		}
		kept = append(kept, l)
	}
	out, ok := run(t, strings.Join(kept, ""))
	if ok {
		t.Fatalf("a cut-short run passed:\n%s", out)
	}
	inOrder(t, out, "=== fx/f did not finish (the input ended)", "fx/f TestExits was running", "leaving", ", 1 unfinished")
}

func TestNoInputFails(t *testing.T) {
	if out, ok := run(t, ""); ok || !strings.Contains(out, "no package finished") {
		t.Fatalf("empty input: ok=%v\n%s", ok, out)
	}
}

// Lines that are not events (a go command message on stdout, a stray
// print) are passed through.
func TestOtherLinesPassThrough(t *testing.T) {
	out, _ := run(t, "go: downloading example.com/m v1.0.0\n{not json\n"+testdata(t, "passing.jsonl"))
	inOrder(t, out, "go: downloading example.com/m v1.0.0\n{not json\n", "ok  \tfx/b")
}
