package integration

import (
	"io/fs"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMEModuleList: the modules README says `caddy list-modules`
// shows are the ones the built binary has.
func TestREADMEModuleList(t *testing.T) {
	out, err := exec.Command(caddyBinary(t), "list-modules").Output()
	if err != nil {
		t.Fatal(err)
	}
	var built []string
	for _, line := range strings.Split(string(out), "\n") {
		if name := strings.TrimSpace(line); strings.Contains(name, "apikey") {
			built = append(built, name)
		}
	}
	readme := string(mustRead(t, filepath.Join(repoRoot(t), "README.md")))
	_, after, ok := strings.Cut(readme, "`caddy list-modules | grep apikey` shows ")
	if !ok {
		t.Fatal("README no longer lists the modules")
	}
	paragraph, _, _ := strings.Cut(after, "\n\n")
	var listed []string
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(paragraph, -1) {
		listed = append(listed, m[1])
	}
	slices.Sort(built)
	slices.Sort(listed)
	if !slices.Equal(built, listed) {
		t.Fatalf("README lists the modules\n  %v\nthe binary has\n  %v", listed, built)
	}
}

// TestREADMEGoVersion: the Go version README asks for is go.mod's.
func TestREADMEGoVersion(t *testing.T) {
	root := repoRoot(t)
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(mustRead(t, filepath.Join(root, "go.mod"))))
	if m == nil {
		t.Fatal("no go line in go.mod")
	}
	if readme := string(mustRead(t, filepath.Join(root, "README.md"))); !strings.Contains(readme, "Go "+m[1]+" or later") {
		t.Fatalf("README does not ask for Go %s or later (go.mod's go line)", m[1])
	}
}

// TestDocsNameOnlyTestsThatExist: every test, fuzz target and benchmark
// the docs cite as holding a claim is one the tree has, wherever the
// docs are (README, SECURITY, BENCHMARKS and the guides in docs/).
func TestDocsNameOnlyTestsThatExist(t *testing.T) {
	root := repoRoot(t)
	defined := map[string]bool{}
	declared := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Z]\w*)\(`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		for _, m := range declared.FindAllStringSubmatch(string(mustRead(t, path)), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	docs = append(docs, filepath.Join(root, "README.md"), filepath.Join(root, "SECURITY.md"), filepath.Join(root, "BENCHMARKS.md"))
	cited := regexp.MustCompile(`\b(?:Test|Fuzz|Benchmark)[A-Z]\w*`)
	for _, doc := range docs {
		for _, name := range cited.FindAllString(string(mustRead(t, doc)), -1) {
			if !defined[name] {
				t.Errorf("%s cites %s, which no test file defines", filepath.Base(doc), name)
			}
		}
	}
	if len(defined) < 100 {
		t.Fatalf("found only %d tests: the walk missed the tree", len(defined))
	}
}
