package caddymodule

import (
	"os"
	"regexp"
	"testing"

	"github.com/caddy-apikeys/caddy-apikeys/ops"
)

// TestAdminAPIDocListsEveryOperation: the AdminAPI's doc comment, which
// becomes its JSON docs, lists every operation the admin API serves, and
// no other.
func TestAdminAPIDocListsEveryOperation(t *testing.T) {
	src, err := os.ReadFile("admin.go")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^//\t(GET|POST|PUT|DELETE) +/apikeys/(\S*)`).FindAllStringSubmatch(string(src), -1) {
		path := regexp.MustCompile(`\[?\?<owner>\]?`).ReplaceAllString(m[2], "")
		documented[m[1]+" "+regexp.MustCompile(`<(\w+)>`).ReplaceAllString(path, "{$1}")] = true
	}
	for _, r := range ops.Routes() {
		key := r.Method + " " + r.Path
		if !documented[key] {
			t.Errorf("%s (%s) is not in AdminAPI's doc comment", key, r.Name)
		}
		delete(documented, key)
	}
	for key := range documented {
		t.Errorf("AdminAPI's doc comment lists %s, which the admin API does not serve", key)
	}
}
