package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

func TestDecodeRequestBody(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		status int // 0: accepted
		title  string
	}{
		{name: "empty body", in: ``, title: ""}, // the key policy's default
		{name: "empty object", in: `{}`, title: ""},
		{name: "title given", in: `{"auth": "x", "title": "T"}`, title: "T"},
		{name: "null title with spaces around", in: ` {"title": null} `, title: ""},
		{name: "non-ASCII title", in: `{"title": "é"}`, title: "é"},
		{name: "title a number", in: `{"title": 5}`, status: 400},
		{name: "title an array", in: `{"title": ["a"]}`, status: 400},
		{name: "array body", in: `[]`, status: 400},
		{name: "string body", in: `"auth"`, status: 400},
		{name: "null body", in: `null`, status: 400},
		{name: "number body", in: `42`, status: 400},
		{name: "truncated JSON", in: `{"auth": `, status: 400},
		{name: "trailing data", in: `{"auth": "x"} trailing`, status: 400},
		{name: "not JSON", in: `not json`, status: 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := decodeRequestBody([]byte(c.in))
			if err == nil {
				var title string
				title, err = b.title()
				if err == nil {
					if c.status != 0 || title != c.title {
						t.Errorf("%.40q: accepted with title %.20q, want status %d title %.20q", c.in, title, c.status, c.title)
					}
					return
				}
			}
			var ae *wire.Error
			if !errors.As(err, &ae) || ae.Status != c.status {
				t.Errorf("%.40q: error %v, want status %d", c.in, err, c.status)
			}
		})
	}
}

func FuzzDecodeRequestBody(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"auth":{"username":"u","password":"p"},"title":"t"}`, `[1]`, `{"title":5}`,
		`{"AUTH" : "tok" ,"Title":null, "scopes":["a"], "x":{"title":1}}`, `{"\u0061uth":"t","\u017fcopes":[],"expires_in":1e3,"grace_seconds":-0,"api_key_id":"i"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeRequestBody(data)
		if err != nil {
			var ae *wire.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		// The members are those json.Unmarshal finds.
		var want struct {
			Auth         json.RawMessage `json:"auth"`
			Title        json.RawMessage `json:"title"`
			APIKeyID     json.RawMessage `json:"api_key_id"`
			GraceSeconds json.RawMessage `json:"grace_seconds"`
			ExpiresIn    json.RawMessage `json:"expires_in"`
			Scopes       json.RawMessage `json:"scopes"`
		}
		if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 {
			if err := json.Unmarshal(trimmed, &want); err != nil {
				t.Fatalf("accepted %q, which json.Unmarshal refuses: %v", data, err)
			}
		}
		for _, m := range [][2]json.RawMessage{{b.Auth, want.Auth}, {b.Title, want.Title}, {b.APIKeyID, want.APIKeyID},
			{b.GraceSeconds, want.GraceSeconds}, {b.ExpiresIn, want.ExpiresIn}, {b.Scopes, want.Scopes}} {
			if !bytes.Equal(m[0], m[1]) || (m[0] == nil) != (m[1] == nil) {
				t.Fatalf("%q: member %q, json.Unmarshal %q", data, m[0], m[1])
			}
		}
		if _, err := b.title(); err != nil {
			var ae *wire.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
				t.Fatalf("title error %v is not a 400", err)
			}
		}
	})
}

// Whatever number a client sends as expires_in or grace_seconds, the
// answer is a refusal (400) or a duration within the bound, never one
// that wrapped around.
func FuzzSecondsField(f *testing.F) {
	for _, s := range []string{`5`, `9223372036.85`, `1e19`, `-0`, `-1`, `1e-300`, `"5"`, `null`, `9223372036854775807`} {
		f.Add([]byte(s), int64(math.MaxInt64))
		f.Add([]byte(s), int64(MaxGrace))
	}
	f.Fuzz(func(t *testing.T, raw []byte, limit int64) {
		if limit < int64(time.Second) {
			return
		}
		d, err := secondsField("n", raw, time.Duration(limit))
		if err != nil {
			var ae *wire.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
				t.Fatalf("%s: error %v is not a 400", raw, err)
			}
			return
		}
		if d < 0 || d > time.Duration(limit) {
			t.Fatalf("%s: %v, outside [0, %v]", raw, d, time.Duration(limit))
		}
	})
}
