package identity

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
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

// UnquoteJSON decodes exactly what json.Unmarshal decodes into a string,
// and refuses what it refuses.
func FuzzUnquoteJSON(f *testing.F) {
	for _, s := range []string{`"plain"`, `"esc\"aped\n"`, `"\u00e9t\u00e9"`, "\"\xff\"", "\"tab\there\"", `5`, `null`, `"`, `""`, `"a"b"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := UnquoteJSON(raw)
		var want string
		wantErr := json.Unmarshal(raw, &want)
		if (err != nil) != (wantErr != nil) || got != want {
			t.Fatalf("%q: %q, %v; json.Unmarshal %q, %v", raw, got, err, want, wantErr)
		}
	})
}
