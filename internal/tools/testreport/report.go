package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// event is one line of `go test -json` (see `go doc cmd/test2json`);
// ImportPath is set on the build events (build-output, build-fail).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	Elapsed    float64
	ImportPath string
}

// skipped is a test that was skipped, with the reason it logged.
type skipped struct{ pkg, test, reason string }

// pkgState is what is held about a package until it finishes.
type pkgState struct {
	out     strings.Builder             // output outside any test
	summary string                      // its "ok", "FAIL" or "?" line
	tests   map[string]*strings.Builder // output of tests still running
	order   []string                    // tests in the order they started
	failed  int                         // tests that failed
}

// report turns events into the lines a person reads; see the package doc.
type report struct {
	w        io.Writer
	pkgs     map[string]*pkgState
	skips    []skipped
	ok       int // packages that passed (or had no tests)
	failPkgs []string
	failed   int // tests that failed
	builds   int // builds that failed
}

func newReport(w io.Writer) *report {
	return &report{w: w, pkgs: map[string]*pkgState{}}
}

// read feeds every line of in to the report.
func (r *report) read(in io.Reader) error {
	br := bufio.NewReader(in)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			r.line(line)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// line takes one line of input: an event, or anything else, printed as is.
func (r *report) line(b []byte) {
	var e event
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &e) != nil || e.Action == "" {
		r.w.Write(b)
		if !bytes.HasSuffix(b, []byte("\n")) {
			io.WriteString(r.w, "\n")
		}
		return
	}
	r.event(e)
}

func (r *report) pkg(name string) *pkgState {
	p := r.pkgs[name]
	if p == nil {
		p = &pkgState{tests: map[string]*strings.Builder{}}
		r.pkgs[name] = p
	}
	return p
}

func (r *report) event(e event) {
	switch e.Action {
	case "build-output":
		io.WriteString(r.w, e.Output)
		return
	case "build-fail":
		r.builds++
		return
	}
	p := r.pkg(e.Package)
	if e.Test == "" {
		r.packageEvent(e, p)
		return
	}
	switch e.Action {
	case "run":
		p.test(e.Test)
	case "output":
		p.test(e.Test).WriteString(e.Output)
	case "pass":
		delete(p.tests, e.Test)
	case "skip":
		r.skips = append(r.skips, skipped{e.Package, e.Test, reason(p.test(e.Test).String())})
		delete(p.tests, e.Test)
	case "fail":
		r.failed++
		p.failed++
		fmt.Fprintf(r.w, "=== FAIL %s %s (%.2fs)\n%s", e.Package, e.Test, e.Elapsed, withoutMarkers(p.test(e.Test).String()))
		delete(p.tests, e.Test)
	}
}

// test is the output held for a test, which it starts holding if need be.
func (p *pkgState) test(name string) *strings.Builder {
	b := p.tests[name]
	if b == nil {
		b = &strings.Builder{}
		p.tests[name] = b
		p.order = append(p.order, name)
	}
	return b
}

func (r *report) packageEvent(e event, p *pkgState) {
	switch e.Action {
	case "output":
		if isSummary(e.Output) {
			p.summary = e.Output
		} else {
			p.out.WriteString(e.Output)
		}
		return
	case "pass", "skip":
		r.ok++
	case "fail":
		r.failPkgs = append(r.failPkgs, e.Package)
		if out := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(p.out.String()), "FAIL")); out != "" {
			fmt.Fprintf(r.w, "=== FAIL %s, outside its tests:\n%s\n", e.Package, out)
		}
		for _, name := range p.order {
			if b := p.tests[name]; b != nil {
				fmt.Fprintf(r.w, "=== FAIL %s %s did not finish:\n%s", e.Package, name, withoutMarkers(b.String()))
			}
		}
	default:
		return // start, and actions of later Go versions
	}
	if p.summary == "" {
		verdict := "ok  "
		if e.Action == "fail" {
			verdict = "FAIL"
		}
		p.summary = verdict + "\t" + e.Package + "\n"
	}
	io.WriteString(r.w, p.summary)
	delete(r.pkgs, e.Package)
}

// isSummary: the line go test prints for a package when it finishes.
func isSummary(s string) bool {
	return strings.HasPrefix(s, "ok  \t") || strings.HasPrefix(s, "FAIL\t") || strings.HasPrefix(s, "?   \t")
}

// markers are the lines go test -v adds around a test's own output.
var markers = []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME"}

func withoutMarkers(out string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(out, "\n") {
		t := strings.TrimSpace(l)
		if t == "" && l == "" {
			continue
		}
		keep := true
		for _, m := range markers {
			if strings.HasPrefix(t, m) {
				keep = false
			}
		}
		if keep {
			b.WriteString(l)
		}
	}
	s := b.String()
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// reason is the last line a skipped test logged before its "--- SKIP"
// line: its t.Skip message, with the file:line go test puts before it.
func reason(out string) string {
	last := "(no reason given)"
	for _, l := range strings.Split(withoutMarkers(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--- SKIP") {
			last = l
		}
	}
	return last
}

// finish prints the skipped tests and the count, and says whether the
// run passed.
func (r *report) finish() bool {
	var unfinished []string
	for name := range r.pkgs {
		if name != "" {
			unfinished = append(unfinished, name)
		}
	}
	sort.Strings(unfinished)
	for _, name := range unfinished {
		fmt.Fprintf(r.w, "=== %s did not finish (the input ended)\n", name)
		for _, t := range r.pkgs[name].order {
			if b := r.pkgs[name].tests[t]; b != nil {
				fmt.Fprintf(r.w, "=== %s %s was running:\n%s", name, t, withoutMarkers(b.String()))
			}
		}
	}
	if len(r.skips) > 0 {
		sort.SliceStable(r.skips, func(i, j int) bool { return r.skips[i].pkg < r.skips[j].pkg })
		fmt.Fprintf(r.w, "\nSkipped tests (go test lists them only with -v):\n")
		for _, s := range r.skips {
			fmt.Fprintf(r.w, "  %s %s: %s\n", s.pkg, s.test, s.reason)
		}
	}
	passed := r.failed == 0 && len(r.failPkgs) == 0 && r.builds == 0 && len(unfinished) == 0 && r.ok > 0
	verdict := "PASS"
	if !passed {
		verdict = "FAIL"
	}
	fmt.Fprintf(r.w, "\n%s: %d packages passed, %d failed", verdict, r.ok, len(r.failPkgs))
	if len(unfinished) > 0 {
		fmt.Fprintf(r.w, ", %d unfinished", len(unfinished))
	}
	if r.builds > 0 {
		fmt.Fprintf(r.w, ", %d builds failed", r.builds)
	}
	fmt.Fprintf(r.w, "; %d tests failed, %d skipped\n", r.failed, len(r.skips))
	if r.ok == 0 && len(r.failPkgs) == 0 {
		fmt.Fprintln(r.w, "(no package finished: was the input go test -json?)")
	}
	return passed
}
