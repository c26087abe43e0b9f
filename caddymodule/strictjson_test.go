package caddymodule

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// duplicateMemberByTokens is the obvious way, through encoding/json's
// tokens, that duplicateMember must agree with.
func duplicateMemberByTokens(data []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func() (string, bool)
	walk = func() (string, bool) {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		delim, ok := tok.(json.Delim)
		if !ok {
			return "", false
		}
		switch delim {
		case '{':
			seen := map[string]bool{}
			for dec.More() {
				keyTok, err := dec.Token()
				if err != nil {
					return "", false
				}
				key, _ := keyTok.(string)
				if seen[foldName(key)] {
					return key, true
				}
				seen[foldName(key)] = true
				if name, dup := walk(); dup {
					return name, true
				}
			}
		case '[':
			for dec.More() {
				if name, dup := walk(); dup {
					return name, true
				}
			}
		}
		_, _ = dec.Token()
		return "", false
	}
	return walk()
}

func TestDuplicateMemberAgreesWithTokens(t *testing.T) {
	var b strings.Builder // more members than the scanner keeps in a list
	b.WriteString("{")
	for i := range 100 {
		b.WriteString(`"k` + strings.Repeat("y", i) + `": [1, {"x": null}],`)
	}
	b.WriteString(`"K": 1, "k": 2}`)
	for _, body := range []string{
		`{}`, `[]`, `"s"`, `1`, `null`,
		`{"a": 1, "b": {"a": 2}}`,
		`{"a": 1, "A": 2}`,
		`{"a\u0041": 1, "AA": 2}`,
		`{"x": [{"y": 1, "Y": 2}]}`,
		`{"k\"": 1, "K\"": 2}`,
		"{\"\xff\": 1, \"\xfe\": 2}",
		`{"s": "a,b}c]", "S": 1}`,
		`{"n": -1.5e+3, "t": true, "f": false, "z": null, "N": 0}`,
		`{"": 0, "": 1}`,
		`{"a": {"": [], "": 2}}`,
		` { "a" : { "b" : [ 1 , 2 ] } , "c" : "\\" , "C" : 3 } `,
		b.String(),
	} {
		if !json.Valid([]byte(body)) {
			t.Fatalf("not valid JSON: %s", body)
		}
		got, dup := duplicateMember([]byte(body))
		if want, wantDup := duplicateMemberByTokens([]byte(body)); got != want || dup != wantDup {
			t.Errorf("%.60s: %q %v, want %q %v", body, got, dup, want, wantDup)
		}
	}
}

// On any valid JSON, the scanner finds what the tokens find; on anything
// else it does not panic.
func FuzzDuplicateMember(f *testing.F) {
	for _, s := range []string{`{"a":1,"A":2}`, `{"x":[{"y":1},{"y":2}]}`, `{"\u212a":1,"k":2}`, `[{"a":"}","a":1}]`, `{"a":`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, dup := duplicateMember(data)
		if !json.Valid(data) {
			return
		}
		if want, wantDup := duplicateMemberByTokens(data); got != want || dup != wantDup {
			t.Fatalf("%q: %q %v, want %q %v", data, got, dup, want, wantDup)
		}
	})
}

// A create_api_key body: the scanner against the tokens.
func BenchmarkDuplicateMember(b *testing.B) {
	body := []byte(`{"auth": {"username": "alice", "password": "correct horse battery staple"}, "title": "CI deploy key", "expires_in": 2592000, "scopes": ["read", "write"]}`)
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			duplicateMember(body)
		}
	})
	b.Run("tokens", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			duplicateMemberByTokens(body)
		}
	})
}
