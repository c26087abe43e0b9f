package integration

import (
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
