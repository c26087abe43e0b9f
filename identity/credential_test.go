package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson/jsonref"
)

func TestDecodeAuth(t *testing.T) {
	cases := []struct {
		name    string
		raw     string
		want    Credential
		errPart string
	}{
		{name: "token string", raw: `"eyJ.a.b"`, want: Credential{Kind: KindOAuth2, Token: "eyJ.a.b"}},
		{name: "oauth2 member", raw: `{"oauth2": "eyJ.a.b"}`, want: Credential{Kind: KindOAuth2, Token: "eyJ.a.b"}},
		{name: "username and password", raw: `{"username": "u", "password": "p"}`, want: Credential{Kind: KindPassword, Username: "u", Password: "p"}},
		{name: "password with an extra member", raw: `{"username": "u", "password": "p", "extra": 1}`, want: Credential{Kind: KindPassword, Username: "u", Password: "p"}},
		{name: "api_key member", raw: `{"api_key": "sk-abc"}`, want: Credential{Kind: KindAPIKey}},
		{name: "api_key beats password", raw: `{"username": "u", "password": "p", "api_key": "x"}`, want: Credential{Kind: KindAPIKey}},
		{name: "api_key not a string", raw: `{"api_key": 5}`, want: Credential{Kind: KindAPIKey}},
		{name: "key as token string", raw: `"sk-6kwHVPIcgnRtz3LE2WixpqXkvbPEyDRt4QEukkK4vZF4JfaN"`, want: Credential{Kind: KindAPIKey}},
		{name: "key as oauth2 member", raw: `{"oauth2": "sk-abc"}`, want: Credential{Kind: KindAPIKey}},
		{name: "no auth", raw: ``, errPart: `missing "auth"`},
		{name: "null", raw: `null`, errPart: `missing "auth"`},
		{name: "empty string", raw: `""`, errPart: "empty"},
		{name: "number", raw: `42`, errPart: "must be an OAuth2 token string or an object"},
		{name: "array", raw: `["u","p"]`, errPart: "must be an OAuth2 token string or an object"},
		{name: "boolean", raw: `true`, errPart: "must be an OAuth2 token string or an object"},
		{name: "empty object", raw: `{}`, errPart: "must be an OAuth2 token string or an object"},
		{name: "password missing", raw: `{"username": "u"}`, errPart: `"auth.password" is missing`},
		{name: "username missing", raw: `{"password": "p"}`, errPart: `"auth.username" is missing`},
		{name: "username empty", raw: `{"username": "", "password": "p"}`, errPart: "must not be empty"},
		{name: "username not a string", raw: `{"username": 1, "password": "p"}`, errPart: `"auth.username" must be a string`},
		{name: "password not a string", raw: `{"username": "u", "password": {"a": 1}}`, errPart: `"auth.password" must be a string`},
		{name: "prehashed password", raw: `{"username": "u", "password_prehash": "abc"}`, errPart: "not supported"},
		{name: "oauth2 not a string", raw: `{"oauth2": 7}`, errPart: `"auth.oauth2" must be a string`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeAuth(json.RawMessage(c.raw), "sk-")
			if c.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), c.errPart) || !errors.Is(err, ErrBadAuthShape) {
					t.Errorf("DecodeAuth(%.40s) error = %v, want one containing %q", c.raw, err, c.errPart)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("DecodeAuth(%.40s) = %+v, %v; want %+v", c.raw, got, err, c.want)
			}
		})
	}
}

func FuzzDecodeAuth(f *testing.F) {
	for _, s := range []string{`"tok"`, `{"username":"u","password":"p"}`, `{"api_key":"k"}`, `{"oauth2":"t"}`, `[]`, `null`, `{"username":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		cred, err := DecodeAuth(raw, "sk-")
		// An object reads as through json.Unmarshal into a map, unless it
		// is not strict JSON (a member twice, in any letter case), which
		// the map would silently read one way: that is refused.
		trimmed := bytes.TrimSpace(raw)
		if len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed) && jsonref.Check(trimmed) != nil {
			if err == nil {
				t.Fatalf("%q: accepted as %+v, but it is not strict JSON", raw, cred)
			}
			return
		}
		if len(trimmed) > 0 && trimmed[0] == '{' {
			wantCred, wantErr := decodeAuthObjectByMap(trimmed, "sk-")
			if cred != wantCred || fmt.Sprint(err) != fmt.Sprint(wantErr) {
				t.Fatalf("%q: %+v, %v; through a map %+v, %v", raw, cred, err, wantCred, wantErr)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrBadAuthShape) {
				t.Fatalf("error %v does not wrap ErrBadAuthShape", err)
			}
			if cred != (Credential{}) {
				t.Fatalf("error with a credential: %+v", cred)
			}
			return
		}
		switch cred.Kind {
		case KindPassword:
			if cred.Username == "" || cred.Password == "" {
				t.Fatal("password credential with empty fields")
			}
		case KindOAuth2:
			if cred.Token == "" || strings.HasPrefix(cred.Token, "sk-") {
				t.Fatalf("bad token credential %q", cred.Token)
			}
		case KindAPIKey:
		default:
			t.Fatalf("unknown kind %v", cred.Kind)
		}
	})
}

// decodeAuthObjectByMap is decodeAuthObject as it was, through
// json.Unmarshal into a map: FuzzDecodeAuth holds the two equal.
func decodeAuthObjectByMap(raw json.RawMessage, keyPrefix string) (Credential, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return Credential{}, shapeError(`"auth" is not a valid JSON object`)
	}
	members := make(map[string][]byte, len(obj))
	for name, v := range obj {
		members[name] = v
	}
	return authCredential(members, keyPrefix)
}

// BenchmarkDecodeAuthObject decodes a sign-in's "auth" object, as each
// password mint does, beside the map-based decoder it replaced.
func BenchmarkDecodeAuthObject(b *testing.B) {
	raw := []byte(`{"username": "alice", "password": "correct horse battery staple"}`)
	for _, d := range []struct {
		name   string
		decode func([]byte, string) (Credential, error)
	}{{"members", func(raw []byte, prefix string) (Credential, error) { return DecodeAuth(raw, prefix) }},
		{"map", func(raw []byte, prefix string) (Credential, error) { return decodeAuthObjectByMap(raw, prefix) }}} {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if c, err := d.decode(raw, "sk-"); err != nil || c.Kind != KindPassword {
					b.Fatal(c, err)
				}
			}
		})
	}
}
