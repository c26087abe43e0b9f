package leaks

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson/jsonref"
)

func TestParseAlerts(t *testing.T) {
	for _, c := range []struct {
		name string
		body string
		want []Alert
		ok   bool
	}{
		{"GitHub's example", `[{"token":"NMIfyYncKcRALEXAMPLE","type":"mycompany_api_token","url":"https://github.com/octocat/Hello-World/blob/1/foo/bar.txt","source":"content"}]`,
			[]Alert{{Token: "NMIfyYncKcRALEXAMPLE", Type: "mycompany_api_token", URL: "https://github.com/octocat/Hello-World/blob/1/foo/bar.txt", Source: "content"}}, true},
		{"only a token", `[{"token":"t"}]`, []Alert{{Token: "t"}}, true},
		{"unknown members ignored", `[{"token":"t","extra":{"a":1}}]`, []Alert{{Token: "t"}}, true},
		{"null members", `[{"token":"t","url":null}]`, []Alert{{Token: "t"}}, true},
		{"empty array", `[]`, []Alert{}, true},
		{"an object, not an array", `{"token":"t"}`, nil, false},
		{"not JSON", `[{"token":`, nil, false},
		{"a match that is not an object", `["t"]`, nil, false},
		{"a null match", `[null]`, nil, false},
		{"no token", `[{"type":"x"}]`, nil, false},
		{"empty token", `[{"token":""}]`, []Alert{{}}, true},
		{"null token", `[{"token":null}]`, nil, false},
		{"token not a string", `[{"token":7}]`, nil, false},
		{"url not a string", `[{"token":"t","url":[]}]`, nil, false},
		{"long token", `[{"token":"` + strings.Repeat("a", 5000) + `"}]`, []Alert{{Token: strings.Repeat("a", 5000)}}, true},
		{"invalid UTF-8", "[{\"token\":\"\xff\"}]", nil, false},
		{"a lone surrogate", `[{"token":"\ud800"}]`, nil, false},
		{"token twice", `[{"token":"sk-a","token":"sk-b"}]`, nil, false},
		{"token in another letter case", `[{"token":"sk-a","TOKEN":"sk-b"}]`, nil, false},
		{"token escaped beside token", `[{"token":"sk-a","t\u006fken":"sk-b"}]`, nil, false},
		{"empty body", ``, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseAlerts([]byte(c.body))
			if !c.ok {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseAlerts = %+v, %v; want ErrMalformed", got, err)
				}
				return
			}
			if err != nil || len(got) != len(c.want) {
				t.Fatalf("ParseAlerts = %+v, %v; want %+v", got, err, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("match %d = %+v, want %+v", i, got[i], c.want[i])
				}
			}
		})
	}
	many := "[" + strings.Repeat(`{"token":"t"},`, MaxAlerts) + `{"token":"t"}]`
	if _, err := ParseAlerts([]byte(many)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%d matches: %v", MaxAlerts+1, err)
	}
}

func TestFeedbackNamesTheTokenByItsDigest(t *testing.T) {
	f := FeedbackFor(Alert{Token: "secret-token", Type: "acme_key"}, TruePositive)
	sum := sha256.Sum256([]byte("secret-token"))
	if f.TokenHash != hex.EncodeToString(sum[:]) || f.TokenType != "acme_key" || f.Label != TruePositive {
		t.Fatalf("%+v", f)
	}
}

func FuzzParseAlerts(f *testing.F) {
	for _, s := range []string{`[{"token":"t","type":"x","url":"u","source":"content"}]`, `[]`, `[null]`, `{"token":1}`, `[{"token":"` + "\xff" + `"}]`, `[{"token":"a","token":"b"}]`, `[{"token":"a","TOKEN":"b"}]`, `[{"token":"a","t\u006fken":"b"}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		alerts, err := ParseAlerts(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		// Only what the reference reads as strict JSON, and each match's
		// token as it reads it.
		if err := jsonref.Check(bytes.TrimSpace(body)); err != nil {
			t.Fatalf("%q accepted; the reference refuses it: %v", body, err)
		}
		var ref []map[string]any
		if err := json.Unmarshal(body, &ref); err != nil || len(ref) != len(alerts) {
			t.Fatalf("%q: %d matches; the reference reads %d (%v)", body, len(alerts), len(ref), err)
		}
		for i, a := range alerts {
			if tok, _ := ref[i]["token"].(string); tok != a.Token {
				t.Fatalf("%q: match %d token %q; the reference reads %q", body, i, a.Token, tok)
			}
		}
		if len(alerts) > MaxAlerts {
			t.Fatalf("%d matches accepted", len(alerts))
		}
		for _, a := range alerts {
			if a.Token != "" && !utf8.ValidString(a.Token) {
				t.Fatalf("a token not in UTF-8 accepted: %q", a.Token)
			}
		}
	})
}
