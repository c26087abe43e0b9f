package presented

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestQueryParamKeepsTheRestAsSent(t *testing.T) {
	cases := []struct {
		name, raw, rest string
		values          []string
		ambiguous       bool
	}{
		{"only the key", "api_key=K", "", []string{"K"}, false},
		{"key among other parameters", "b=%2F&api_key=K&a=1;c=2&e=x+y", "b=%2F&a=1;c=2&e=x+y", []string{"K"}, false},
		{"empty segments kept", "z=1&&api_key=K&z=1", "z=1&&z=1", []string{"K"}, false},
		{"escaped spellings of the name", "api%5Fkey=K1&api+key=x&api_key=K%2B2", "api+key=x", []string{"K1", "K+2"}, false},
		{"invalid escapes kept as sent", "a=%zz&api_key=%zz", "a=%zz", []string{"%zz"}, false},
		{"key after a semicolon", "x=1;api_key=K", "x=1;api_key=K", nil, true},
		{"escaped name after a semicolon", "x=1;api%5Fkey", "x=1;api%5Fkey", nil, true},
		{"longer names", "api_keys=K&xapi_key=K", "api_keys=K&xapi_key=K", nil, false},
		{"empty query", "", "", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			values, rest, ambiguous := queryParam(c.raw, "api_key")
			if rest != c.rest || !slices.Equal(values, c.values) || ambiguous != c.ambiguous {
				t.Errorf("queryParam(%q) = %q, %q, %v; want %q, %q, %v", c.raw, values, rest, ambiguous, c.values, c.rest, c.ambiguous)
			}
		})
	}
	if got := withQuery("/v1/x?api_key=K&a=1", "a=1"); got != "/v1/x?a=1" {
		t.Errorf("withQuery = %q", got)
	}
	if got := withQuery("/v1/x?api_key=K", ""); got != "/v1/x" {
		t.Errorf("withQuery = %q", got)
	}
}

func FuzzQueryParam(f *testing.F) {
	for _, s := range []string{"api_key=K", "b=%2F&api_key=K&a=1;c=2", "api%5Fkey=1&&x", ";api_key=;", "%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		values, rest, ambiguous := queryParam(raw, "api_key")
		segs := strings.Split(raw, "&")
		var kept []string
		for _, seg := range segs {
			k, _, _ := strings.Cut(seg, "=")
			if paramName(k) != "api_key" {
				kept = append(kept, seg)
			}
		}
		if len(values) != len(segs)-len(kept) {
			t.Fatalf("%d values for %d segments named api_key", len(values), len(segs)-len(kept))
		}
		if len(values) == 0 && rest != raw {
			t.Fatalf("nothing removed, but %q became %q", raw, rest)
		}
		if len(values) > 0 && rest != strings.Join(kept, "&") {
			t.Fatalf("%q became %q, not the other segments as sent", raw, rest)
		}
		// What Go's own parser sees of the rest holds no key, unless the
		// request was found ambiguous.
		if q, _ := url.ParseQuery(rest); q.Has("api_key") && !ambiguous {
			t.Fatalf("%q still carries api_key for url.ParseQuery", rest)
		}
	})
}
