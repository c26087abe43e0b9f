package strictjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	. "github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson/jsonref"
)

type owner struct {
	User    string `json:"user,omitempty"`
	Service string `json:"service,omitempty"`
}

type request struct {
	owner
	Hashes  []string `json:"hashes"`
	Balance *int64   `json:"balance"`
	Seconds float64  `json:"expires_in,omitempty"`
	Only    bool     `json:"disable_only,omitempty"`
	Nested  struct {
		Plan string `json:"plan"`
	} `json:"nested"`
}

func TestDecodeObject(t *testing.T) {
	for _, c := range []struct {
		body, want string
	}{
		{`{"hashes": ["a"], "user": "alice", "balance": 5}`, ""},
		{`{"HASHES": ["a"], "User": "alice"}`, ""},
		{`{"hashes": 5}`, `"hashes" must be a list of strings`},
		{`{"hashes": [1]}`, `"hashes" must be a string`},
		{`{"balance": 9223372036854775808}`, `"balance" must be an integer from -9223372036854775808 to 9223372036854775807`},
		{`{"balance": 1.5}`, `"balance" must be an integer from -9223372036854775808 to 9223372036854775807`},
		{`{"user": 1}`, `"user" must be a string`},
		{`{"disable_only": "yes"}`, `"disable_only" must be true or false`},
		{`{"expires_in": "1h"}`, `"expires_in" must be a number`},
		{`{"nested": {"plan": 1}}`, `"nested.plan" must be a string`},
		{`{"nested": 1}`, `"nested" must be an object`},
		{`{"nested": {"plan": "p", "Planet": 1}}`, `unknown member "nested.Planet"`},
		{`{"hashes": [], "extra": 1}`, `unknown member "extra"`},
		{`{"hashes": [], "HASHES": []}`, `JSON document has the member "HASHES" more than once (names match in any letter case)`},
		{`[]`, `JSON document is not valid JSON`},
		{`{"user": "\ud800"}`, `JSON document is not valid UTF-8`},
	} {
		var r request
		err := DecodeObject([]byte(c.body), &r)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.body, err)
		case c.want != "" && (err == nil || err.Error() != c.want):
			t.Errorf("%s: %v, want %s", c.body, err, c.want)
		}
		var fe *FieldError
		var se *Error
		if err != nil && !errors.As(err, &fe) && !errors.As(err, &se) {
			t.Errorf("%s: %T is neither a FieldError nor an Error", c.body, err)
		}
	}
}

// DecodeObject accepts only what the reference reads as strict JSON and
// encoding/json decodes, refusing unknown members, into the same value.
func FuzzDecodeObject(f *testing.F) {
	for _, s := range []string{`{"hashes":["a"],"user":"u"}`, `{"Hashes":[],"extra":1}`, `{"balance":1e3}`, `{"nested":{"plan":"p"}}`, `{"user":"a","USER":"b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got request
		if DecodeObject(data, &got) != nil {
			return
		}
		if err := jsonref.Check(data); err != nil {
			t.Fatalf("%q accepted; the reference refuses it: %v", data, err)
		}
		var want request
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("%q accepted; encoding/json refuses it: %v", data, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: %+v; encoding/json %+v", data, got, want)
		}
	})
}
