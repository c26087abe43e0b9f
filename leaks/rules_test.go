package leaks

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// rulesDoc is the guide that gives operators the scanners' rules, from
// the repository root.
const rulesDoc = "docs/leaks-and-notices.md"

// readmeRules returns the gitleaks regular expression and GitHub's
// custom pattern (format, before, after) that the docs give operators.
func readmeRules(t *testing.T) (gitleaks *regexp.Regexp, github *regexp.Regexp) {
	t.Helper()
	b, err := os.ReadFile("../" + rulesDoc)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	m := regexp.MustCompile(`(?m)^regex = '''(.*)'''$`).FindStringSubmatch(readme)
	if m == nil {
		t.Fatalf("%s has no gitleaks rule", rulesDoc)
	}
	gitleaks = regexp.MustCompile(m[1])
	g := regexp.MustCompile("secret format\\s+`([^`]+)`, before secret `([^`]+)`, after secret\\s+`([^`]+)`").FindStringSubmatch(readme)
	if g == nil {
		t.Fatalf("%s has no GitHub custom pattern", rulesDoc)
	}
	// GitHub puts the three parts together like this.
	github = regexp.MustCompile("(?:" + g[2] + ")(" + g[1] + ")(?:" + g[3] + ")")
	return gitleaks, github
}

// The rules the docs give for gitleaks and GitHub find generated keys
// wherever they sit, and none of the near misses that differ in shape.
func TestREADMERulesFindKeys(t *testing.T) {
	gitleaks, github := readmeRules(t)
	for range 200 {
		key := newKey(t, "sk-")
		for _, text := range []string{key, "API_KEY=" + key + "\n", `"` + key + `"`, "a\n" + key + "\nb", "Bearer " + key} {
			for name, re := range map[string]*regexp.Regexp{"gitleaks": gitleaks, "GitHub": github} {
				if m := re.FindStringSubmatch(text); m == nil || m[1] != key {
					t.Fatalf("%s: %q not found in %q (got %q)", name, key, text, m)
				}
			}
		}
		for what, text := range map[string]string{
			"one character more": key + "x",
			"one character less": key[:len(key)-1],
			"glued after a word": "x" + key,
			"another prefix":     "pk-" + key[3:],
			"a hyphen inside":    key[:20] + "-" + key[21:],
		} {
			for name, re := range map[string]*regexp.Regexp{"gitleaks": gitleaks, "GitHub": github} {
				if re.MatchString(text) {
					t.Fatalf("%s matches a near miss (%s): %q", name, what, text)
				}
			}
		}
	}
	// What a regular expression cannot do: a wrong checksum has the right
	// shape. ScanKeys (and the alert endpoint) refuse it.
	key := newKey(t, "sk-")
	wrong := key[:len(key)-1] + map[bool]string{true: "b", false: "a"}[key[len(key)-1] == 'a']
	if !gitleaks.MatchString(wrong) || len(scanAll(t, strings.NewReader(wrong), "sk-")) != 0 {
		t.Fatal("a wrong checksum: the rules should match it and ScanKeys should not")
	}
}
