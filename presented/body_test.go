package presented

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson/jsonref"
)

// keyInBodyByDecoder is keyInBody the obvious way, with encoding/json and
// its tokens: what keyInBody must agree with. ok is false for a body that
// is refused.
func keyInBodyByDecoder(data []byte) (key string, ok bool) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return "", true
	}
	if data[0] != '{' || jsonref.Check(data) != nil {
		return "", false
	}
	// Without duplicates, at most one member's name matches each field.
	find := func(obj []byte, name string) json.RawMessage {
		var m map[string]json.RawMessage
		if json.Unmarshal(obj, &m) != nil {
			return nil
		}
		for k, v := range m {
			if strictjson.Fold(k) == name {
				return v
			}
		}
		return nil
	}
	auth := find(data, "AUTH")
	if len(auth) == 0 || auth[0] != '{' {
		return "", true
	}
	v := find(auth, "API_KEY")
	if v == nil || string(v) == "null" {
		return "", true
	}
	if json.Unmarshal(v, &key) != nil {
		return "", false
	}
	return key, true
}

// FuzzKeyInBody: on any bytes, the gate's one strict reading of a body
// finds the key (or refuses the body) exactly as encoding/json with a
// token-by-token duplicate check does.
func FuzzKeyInBody(f *testing.F) {
	for _, s := range []string{`{"auth":{"api_key":"sk-1"}}`, `{"auth":{"api_key":"a","API_KEY":"b"}}`, `{"auth":1}`, `[]`,
		`{"Auth":{"Api_Key":"sk-\u0041"}}`, "\xef\xbb\xbf{\"auth\":{\"api_key\":\"k\"}}", `{"auth":{"api_key":7}}`, `{"auth":"sk-x"}`, ` `, `{"auth":{"api_key":null}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		key, fault := keyInBody(body)
		want, ok := keyInBodyByDecoder(body)
		if key != want || (fault == bodyOK) != ok {
			t.Fatalf("%q: key %q, fault %d; the decoder says key %q, ok %v", body, key, fault, want, ok)
		}
	})
}

// Every refusal of a body says nothing of the request and holds no
// character a JSON string must escape, so that an error template can
// hold it as it is.
func TestBodyMessagesNeedNoJSONEscaping(t *testing.T) {
	msgs := []string{msgBodyUnreadable, msgBodyNotJSON, (&Places{MaxBodyBytes: 1 << 62}).bodyTooLarge().Error()}
	for _, m := range bodyFaults {
		msgs = append(msgs, m)
	}
	for _, m := range msgs {
		for _, c := range m {
			if c == '"' || c == '\\' || c < 0x20 || c == 0x7f {
				t.Errorf("message %q holds %q", m, c)
			}
		}
	}
}
