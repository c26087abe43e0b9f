package integration

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
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
	docs := docFiles(t, root)
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

// docFiles are the docs: README, SECURITY, BENCHMARKS and the guides in
// docs/.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no guides in docs/: %v", err)
	}
	return append(docs, filepath.Join(root, "README.md"), filepath.Join(root, "SECURITY.md"), filepath.Join(root, "BENCHMARKS.md"))
}

// TestDocsLinksResolve: every relative link of the docs (and image) names
// a file of the tree, and every link to a heading (`#anchor`, in the same
// doc or another Markdown file) names a heading that file has, by
// GitHub's rule for anchors.
func TestDocsLinksResolve(t *testing.T) {
	root := repoRoot(t)
	checked := 0
	for _, doc := range docFiles(t, root) {
		rel, _ := filepath.Rel(root, doc)
		for _, target := range markdownLinks(string(mustRead(t, doc))) {
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			path, anchor, _ := strings.Cut(target, "#")
			file := doc
			if path != "" {
				file = filepath.Join(filepath.Dir(doc), filepath.FromSlash(path))
				if _, err := os.Stat(file); err != nil {
					t.Errorf("%s links to %s, which does not exist", rel, target)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(file, ".md") && !headingAnchors(string(mustRead(t, file)))[anchor] {
				t.Errorf("%s links to %s: no heading has the anchor #%s", rel, target, anchor)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d relative links found: the link reader missed them", checked)
	}
}

var (
	inlineCode   = regexp.MustCompile("`[^`]*`")
	markdownLink = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
)

// markdownLinks are the targets of the links and images of a Markdown
// text, outside code blocks and code spans.
func markdownLinks(text string) []string {
	var out []string
	for _, m := range markdownLink.FindAllStringSubmatch(inlineCode.ReplaceAllString(withoutCodeBlocks(text), ""), -1) {
		out = append(out, m[1])
	}
	return out
}

// headingAnchors are the anchors GitHub gives a Markdown text's headings:
// the heading's text in lower case, spaces as hyphens, punctuation
// dropped (letters, digits, '-' and '_' stay), and -1, -2 … after the
// second and later of one name.
func headingAnchors(text string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(withoutCodeBlocks(text), "\n") {
		heading := strings.TrimLeft(line, "#")
		if len(heading) == len(line) || len(line)-len(heading) > 6 || !strings.HasPrefix(heading, " ") {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		anchor := b.String()
		for n := 1; out[anchor]; n++ {
			anchor = b.String() + "-" + strconv.Itoa(n)
		}
		out[anchor] = true
	}
	return out
}

// withoutCodeBlocks is a Markdown text without its fenced code blocks.
func withoutCodeBlocks(text string) string {
	var b strings.Builder
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
