package strictjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	. "github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson/jsonref"
)

var cases = []struct {
	doc    string
	reason Reason
	member string
}{
	{`{}`, 0, ""}, {`[]`, 0, ""}, {`"s"`, 0, ""}, {`1`, 0, ""}, {`null`, 0, ""},
	{`{"a": 1, "b": {"a": 2}}`, 0, ""},
	{`{"a": {"x": 1}, "b": {"x": 1}}`, 0, ""},
	{`{"a": 1, "A": 2}`, Duplicate, "A"},
	{`{"a\u0041": 1, "AA": 2}`, Duplicate, "AA"},
	{`{"x": [{"y": 1, "Y": 2}]}`, Duplicate, "Y"},
	{`{"k\"": 1, "K\"": 2}`, Duplicate, `K"`},
	{`{"api_key_id": "a", "api_\u212aey_id": "b"}`, Duplicate, "api_\u212aey_id"},
	{`{"scopes": [], "ſcopes": []}`, Duplicate, "ſcopes"},
	{`{"é": 1, "É": 2}`, Duplicate, "É"},
	{`{"": 0, "": 1}`, Duplicate, ""},
	{`{"iss": "https://sso.example", "ISS": "x"}`, Duplicate, "ISS"},
	{`{"s": "a,b}c]", "S": 1}`, Duplicate, "S"},
	{` { "a" : { "b" : [ 1 , 2 ] } , "c" : "\\" , "C" : 3 } `, Duplicate, "C"},
	{"{\"\xff\": 1}", NotUTF8, ""},
	{"\"\xed\xa0\x80\"", NotUTF8, ""},
	{`"\ud800"`, NotUTF8, ""},
	{`"\udc00"`, NotUTF8, ""},
	{`"\ud800\u0041"`, NotUTF8, ""},
	{`{"\ud800x": 1}`, NotUTF8, ""},
	{`"\ud83d\ude00"`, 0, ""},
	{`"\\ud800"`, 0, ""},
	{`{"a":`, NotJSON, ""},
	{`{"a": 1} {}`, NotJSON, ""},
	{``, NotJSON, ""},
}

func TestCheck(t *testing.T) {
	var many strings.Builder // more members than the scanner keeps in a list
	many.WriteString("{")
	for i := range 100 {
		many.WriteString(`"k` + strings.Repeat("y", i) + `": [1, {"x": null}],`)
	}
	many.WriteString(`"K": 1, "k": 2}`)
	all := append(cases, struct {
		doc    string
		reason Reason
		member string
	}{many.String(), Duplicate, "K"})
	for _, c := range all {
		err := Check([]byte(c.doc))
		var e *Error
		switch {
		case c.reason == 0 && err != nil:
			t.Errorf("%.60q: %v, want nil", c.doc, err)
		case c.reason != 0 && (!errors.As(err, &e) || e.Reason != c.reason || e.Member != c.member):
			t.Errorf("%.60q: %#v, want reason %d member %q", c.doc, err, c.reason, c.member)
		}
		if ref := jsonref.Check([]byte(c.doc)); !jsonref.Same(err, ref) {
			t.Errorf("%.60q: %v, reference %v", c.doc, err, ref)
		}
	}
}

// On any input, Check decides what the reference decides, and names the
// same member.
func FuzzCheck(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c.doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := Check(data), jsonref.Check(data); !jsonref.Same(got, want) {
			t.Fatalf("%q: %v, reference %v", data, got, want)
		}
	})
}

// Object hands over the members json.Unmarshal into a map would keep, with
// the same decoded names and raw values, for every document it accepts.
func FuzzObject(f *testing.F) {
	for _, s := range []string{`{}`, ` { "a" : 1 , "b":[1,{"c":"}"}] ,"d":"x\"y"} `, `{"user\u006eame":"u","pass\\word":null}`,
		`{"a":-1.5e3,"b":false}`, `{"é":"ü"}`, `[1]`, `"s"`, `{"a":1,"A":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got := map[string][]byte{}
		err := Object(data, func(m Member) {
			got[string(m.Name)] = m.Value
		})
		var want map[string]json.RawMessage
		isObject := json.Unmarshal(data, &want) == nil && want != nil
		if err != nil {
			if isObject && Check(data) == nil {
				t.Fatalf("%q: %v, but it is a strict object", data, err)
			}
			return
		}
		if !isObject {
			t.Fatalf("%q: accepted, but it is not an object", data)
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d members, json.Unmarshal %d", data, len(got), len(want))
		}
		for name, v := range want {
			if !bytes.Equal(got[name], v) {
				t.Fatalf("%q: member %q = %q, json.Unmarshal %q", data, name, got[name], v)
			}
		}
	})
}

// Fold maps two names to one string exactly when bytes.EqualFold, and so
// encoding/json, matches them.
func FuzzFold(f *testing.F) {
	for _, p := range [][2]string{{"auth", "AUTH"}, {"key", "\u212aey"}, {"é", "É"}, {"ſ", "s"}, {"ß", "ss"}, {"a", "b"}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if (Fold(a) == Fold(b)) != bytes.EqualFold([]byte(a), []byte(b)) {
			t.Fatalf("%q, %q: Fold %q %q, EqualFold %v", a, b, Fold(a), Fold(b), bytes.EqualFold([]byte(a), []byte(b)))
		}
	})
}

// Unquote decodes exactly what json.Unmarshal decodes into a string, and
// refuses what it refuses.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"plain"`, `"esc\"aped\n"`, `"\u00e9t\u00e9"`, "\"\xff\"", "\"tab\there\"", `5`, `null`, `"`, `""`, `"a"b"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := Unquote(raw)
		var want string
		wantErr := json.Unmarshal(raw, &want)
		if (err != nil) != (wantErr != nil) || got != want {
			t.Fatalf("%q: %q, %v; json.Unmarshal %q, %v", raw, got, err, want, wantErr)
		}
	})
}

// A create_api_key body, as every mint reads it.
func BenchmarkObject(b *testing.B) {
	body := []byte(`{"auth": {"username": "alice", "password": "correct horse battery staple"}, "title": "CI deploy key", "expires_in": 2592000, "scopes": ["read", "write"]}`)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := Object(body, func(Member) { n++ }); err != nil {
			b.Fatal(err)
		}
	}
}
