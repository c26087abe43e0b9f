package ops

import (
	"strings"
	"testing"
)

func TestHashesRequestDigests(t *testing.T) {
	good := strings.Repeat("ab", 32)
	for _, c := range []struct {
		name   string
		hashes []string
		ok     bool
	}{
		{"none", nil, true},
		{"one", []string{good}, true},
		{"upper case", []string{strings.ToUpper(good)}, true},
		{"short", []string{good[:62]}, false},
		{"long", []string{good + "00"}, false},
		{"not hex", []string{strings.Repeat("zz", 32)}, false},
		{"a key instead of its digest", []string{"sk-" + strings.Repeat("a", 48)}, false},
		{"too many", make([]string, MaxHashes+1), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Hashes{Hashes: c.hashes}.digests()
			if (err == nil) != c.ok || c.ok && len(got) != len(c.hashes) {
				t.Fatalf("digests() = %d, %v; want ok=%v", len(got), err, c.ok)
			}
		})
	}
}
