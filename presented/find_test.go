package presented

import (
	"net/http"
	"strings"
	"testing"
)

func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer sk-abc", "bearer  tok ", "Basic dTpw", "Bearer", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", header)
		tok, ok := Bearer(r.Header.Get("Authorization"))
		if ok && (tok == "" || tok != strings.TrimSpace(tok)) {
			t.Fatalf("token %q from %q", tok, header)
		}
		if !ok && tok != "" {
			t.Fatal("token without ok")
		}
	})
}
