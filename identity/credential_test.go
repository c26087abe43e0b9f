package identity

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecodeAuth(t *testing.T) {
	cases := []struct {
		raw     string
		want    Credential
		errPart string
	}{
		{raw: `"eyJ.a.b"`, want: Credential{Kind: KindOAuth2, Token: "eyJ.a.b"}},
		{raw: `{"oauth2": "eyJ.a.b"}`, want: Credential{Kind: KindOAuth2, Token: "eyJ.a.b"}},
		{raw: `{"username": "u", "password": "p"}`, want: Credential{Kind: KindPassword, Username: "u", Password: "p"}},
		{raw: `{"username": "u", "password": "p", "extra": 1}`, want: Credential{Kind: KindPassword, Username: "u", Password: "p"}},
		{raw: `{"api_key": "sk-abc"}`, want: Credential{Kind: KindAPIKey}},
		{raw: `{"username": "u", "password": "p", "api_key": "x"}`, want: Credential{Kind: KindAPIKey}},
		{raw: `{"api_key": 5}`, want: Credential{Kind: KindAPIKey}},
		{raw: `"sk-6kwHVPIcgnRtz3LE2WixpqXkvbPEyDRt4QEukkK4vZF4JfaN"`, want: Credential{Kind: KindAPIKey}},
		{raw: `{"oauth2": "sk-abc"}`, want: Credential{Kind: KindAPIKey}},
		{raw: ``, errPart: `missing "auth"`},
		{raw: `null`, errPart: `missing "auth"`},
		{raw: `""`, errPart: "empty"},
		{raw: `42`, errPart: "must be an OAuth2 token string or an object"},
		{raw: `["u","p"]`, errPart: "must be an OAuth2 token string or an object"},
		{raw: `true`, errPart: "must be an OAuth2 token string or an object"},
		{raw: `{}`, errPart: "must be an OAuth2 token string or an object"},
		{raw: `{"username": "u"}`, errPart: `"auth.password" is missing`},
		{raw: `{"password": "p"}`, errPart: `"auth.username" is missing`},
		{raw: `{"username": "", "password": "p"}`, errPart: "must not be empty"},
		{raw: `{"username": 1, "password": "p"}`, errPart: `"auth.username" must be a string`},
		{raw: `{"username": "u", "password": {"a": 1}}`, errPart: `"auth.password" must be a string`},
		{raw: `{"username": "u", "password_prehash": "abc"}`, errPart: "not supported"},
		{raw: `{"oauth2": 7}`, errPart: `"auth.oauth2" must be a string`},
	}
	for _, c := range cases {
		got, err := DecodeAuth(json.RawMessage(c.raw), "sk-")
		if c.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), c.errPart) || !errors.Is(err, ErrBadAuthShape) {
				t.Errorf("DecodeAuth(%.40s) error = %v, want one containing %q", c.raw, err, c.errPart)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("DecodeAuth(%.40s) = %+v, %v; want %+v", c.raw, got, err, c.want)
		}
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
