package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestEpochSecondsAlwaysHasFraction(t *testing.T) {
	cases := []struct {
		name string
		in   time.Time
		want string
	}{
		{"microseconds", time.UnixMicro(1728425378066576), "1728425378.066576"},
		{"whole second", time.Unix(1728425378, 0), "1728425378.0"},
		{"half second", time.UnixMicro(1728425378500000), "1728425378.5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.Marshal(epochSeconds(c.in))
			if err != nil || string(got) != c.want {
				t.Errorf("epochSeconds(%v) = %s, %v; want %s", c.in, got, err, c.want)
			}
		})
	}
}

func TestCreatedKeyShapeAndOrder(t *testing.T) {
	rec := httptest.NewRecorder()
	err := writeJSON(rec, 200, successBody{Success: true, Result: createdKey{APIKey: "sk-x", keyView: keyView{
		ID: "id", Title: "<A & B>", Created: epochSeconds(time.UnixMicro(1728425378066576)), KeyPreview: "sk-...x",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"success":true,"result":{"api_key":"sk-x","id":"id","title":"<A & B>","created":1728425378.066576,"last_used":null,"key_preview":"sk-...x"}}`
	if got := rec.Body.String(); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}

// The minted key's answer, written without reflection, is byte for byte
// what the encoder writes for it, whatever its strings and times.
func FuzzCreatedKeyAnswer(f *testing.F) {
	f.Add("sk-x", "id", "API Key 1", "sk-...x", "", "", int64(1728425378066576), int64(0), int64(0), uint8(0))
	f.Add("sk-x", "id", "<A & B> \"q\" \\ \u2028 \x00 é \xff", "sk-...x", "read\x00write", "gold", int64(1728425378000000), int64(1), int64(-5), uint8(15))
	f.Fuzz(func(t *testing.T, apiKey, id, title, preview, scopes, plan string, created, lastUsed, expires int64, flags uint8) {
		v := keyView{ID: id, Title: title, Created: epochSeconds(time.UnixMicro(created)), KeyPreview: preview, Plan: plan,
			Disabled: flags&1 != 0, Rotated: flags&2 != 0, Orphaned: flags&4 != 0, Leaked: flags&8 != 0}
		if lastUsed != 0 {
			v.LastUsed = optionalEpoch(time.UnixMicro(lastUsed))
		}
		if expires != 0 {
			v.Expires = optionalEpoch(time.UnixMicro(expires))
		}
		if scopes != "" {
			v.Scopes = strings.Split(scopes, "\x00")
		}
		answer := successBody{Success: true, Result: createdKey{APIKey: apiKey, keyView: v}}
		got, ok := appendSuccess(nil, answer)
		if !ok {
			t.Fatal("a created key's answer was left to the encoder")
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(answer); err != nil {
			t.Fatal(err)
		}
		if w := bytes.TrimSuffix(want.Bytes(), []byte("\n")); !bytes.Equal(got, w) {
			t.Fatalf("appended\n %s\nencoder\n %s", got, w)
		}
	})
}

// Listings' extensions are left to the encoder.
func TestCreatedKeyWithCreditsIsEncoded(t *testing.T) {
	answer := successBody{Success: true, Result: createdKey{APIKey: "sk-x", keyView: keyView{Credits: &creditsView{Remaining: 1}}}}
	if _, ok := appendSuccess(nil, answer); ok {
		t.Fatal("credits were appended")
	}
	rec := httptest.NewRecorder()
	if err := writeJSON(rec, 200, answer); err != nil || !strings.Contains(rec.Body.String(), `"credits":{"remaining":1,"amount":0}`) {
		t.Fatalf("body %s, %v", rec.Body.String(), err)
	}
}
