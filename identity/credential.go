// Package identity decides who a caller of the key-management endpoints
// is: it decodes the QueryLake-style "auth" field and checks passwords and
// OAuth2 JWTs. It has no dependency on Caddy.
package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Kind says which credential a caller presented.
type Kind int

// The kinds of credential a caller can present.
const (
	// KindPassword is {"username": ..., "password": ...}.
	KindPassword Kind = iota + 1
	// KindOAuth2 is a JWT, as a bare string or {"oauth2": ...}.
	KindOAuth2
	// KindAPIKey is an API key, as {"api_key": ...} or a string that
	// carries the key prefix. The management endpoints refuse it.
	KindAPIKey
)

// String names the kind for logs and metrics.
func (k Kind) String() string {
	switch k {
	case KindPassword:
		return "password"
	case KindOAuth2:
		return "oauth2"
	case KindAPIKey:
		return "api_key"
	}
	return "unknown"
}

// Credential is a decoded "auth" value. Its secrets must never be logged.
type Credential struct {
	Kind     Kind
	Username string
	Password string
	Token    string
}

// ErrBadAuthShape is wrapped by DecodeAuth errors; its message is safe to
// show to the caller.
var ErrBadAuthShape = errors.New("invalid auth")

// MaxTokenLen caps the length of a token accepted in any form.
const MaxTokenLen = 16 << 10

type authError string

func (e authError) Error() string   { return string(e) }
func (authError) Is(err error) bool { return err == ErrBadAuthShape }
func shapeError(msg string) error   { return authError(msg) }

// DecodeAuth decodes the "auth" member of a request body. As in QueryLake,
// a JSON string is an OAuth2 token and an object is matched by its fields;
// unlike QueryLake, a string that starts with keyPrefix is recognised as
// an API key so that it can be refused with a clear message.
func DecodeAuth(raw json.RawMessage, keyPrefix string) (Credential, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return Credential{}, shapeError(`missing "auth": send an OAuth2 token string or {"username": ..., "password": ...}`)
	}
	switch raw[0] {
	case '"':
		s, err := strictjson.Unquote(raw)
		if err != nil {
			return Credential{}, shapeError(`"auth" is not a valid JSON string`)
		}
		return tokenCredential(s, keyPrefix)
	case '{':
		return decodeAuthObject(raw, keyPrefix)
	}
	return Credential{}, shapeError(`"auth" must be an OAuth2 token string or an object {"username": ..., "password": ...}`)
}

func tokenCredential(s, keyPrefix string) (Credential, error) {
	if keyPrefix != "" && strings.HasPrefix(s, keyPrefix) {
		return Credential{Kind: KindAPIKey}, nil
	}
	if s == "" {
		return Credential{}, shapeError(`"auth" token is empty`)
	}
	return Credential{Kind: KindOAuth2, Token: s}, nil
}

// authMembers are the members of an "auth" object that mean something.
var authMembers = [...]string{"api_key", "password_prehash", "username", "password", "oauth2"}

func decodeAuthObject(raw json.RawMessage, keyPrefix string) (Credential, error) {
	// The members this decoder reads, from the one strict reading.
	obj := make(map[string][]byte, len(authMembers))
	err := strictjson.Object(raw, func(m strictjson.Member) {
		for _, n := range authMembers {
			if string(m.Name) == n {
				obj[n] = m.Value
			}
		}
	})
	var se *strictjson.Error
	if errors.As(err, &se) && se.Reason == strictjson.Duplicate {
		return Credential{}, shapeError(se.Describe(`"auth"`))
	}
	if err != nil {
		return Credential{}, shapeError(`"auth" is not a valid JSON object`)
	}
	return authCredential(obj, keyPrefix)
}

// authCredential is the credential an "auth" object's members, by name,
// make.
func authCredential(obj map[string][]byte, keyPrefix string) (Credential, error) {
	str := func(name string) (string, bool, error) {
		v, ok := obj[name]
		if !ok {
			return "", false, nil
		}
		s, err := strictjson.Unquote(v)
		if err != nil {
			return "", true, shapeError(`"auth.` + name + `" must be a string`)
		}
		return s, true, nil
	}
	// An API key anywhere in the object wins, as in QueryLake, so that it
	// is refused before any credential is checked.
	if _, ok := obj["api_key"]; ok {
		return Credential{Kind: KindAPIKey}, nil
	}
	if _, ok := obj["password_prehash"]; ok {
		return Credential{}, shapeError(`"auth.password_prehash" is not supported: send "username" and "password"`)
	}
	user, hasUser, err := str("username")
	if err != nil {
		return Credential{}, err
	}
	pass, hasPass, err := str("password")
	if err != nil {
		return Credential{}, err
	}
	switch {
	case hasUser && hasPass:
		if user == "" || pass == "" {
			return Credential{}, shapeError(`"auth.username" and "auth.password" must not be empty`)
		}
		if err := keystore.CheckName(user); err != nil {
			return Credential{}, shapeError(`"auth.username": ` + err.Error())
		}
		if strings.ContainsRune(pass, 0) {
			return Credential{}, shapeError(`"auth.password" must not contain NUL characters`)
		}
		return Credential{Kind: KindPassword, Username: user, Password: pass}, nil
	case hasUser:
		return Credential{}, shapeError(`"auth.password" is missing`)
	case hasPass:
		return Credential{}, shapeError(`"auth.username" is missing`)
	}
	if tok, ok, err := str("oauth2"); ok || err != nil {
		if err != nil {
			return Credential{}, err
		}
		return tokenCredential(tok, keyPrefix)
	}
	return Credential{}, shapeError(`"auth" must be an OAuth2 token string or an object {"username": ..., "password": ...}`)
}
